"""A real PACS for the reading-room tests: Debian's Orthanc with its DICOMweb plugin, on free loopback
ports with a temporary storage folder, routing DX/CR images to a ``drustage`` modality by Lua."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
# The department set-up of the README: route every stored hand radiograph to drustage listen.
ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
  if tags['Modality'] == 'DX' or tags['Modality'] == 'CR' then
    SendToModality(instanceId, 'drustage')
  end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def new_port():
    """``new_port()``: a free loopback port."""
    return free_port


@dataclass(frozen=True)
class Orthanc:
    url: str  # REST root
    dicom_port: int
    listen_port: int  # where its "drustage" modality is expected

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str):
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str = "application/dicom"):
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())


@pytest.fixture
def orthanc(tmp_path):
    # Debian installs it in /usr/sbin, which a non-root PATH may leave out
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    if binary is None or not DICOMWEB_PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (Debian: orthanc, orthanc-dicomweb)")
    http_port, dicom_port, listen_port = free_port(), free_port(), free_port()
    (tmp_path / "route.lua").write_text(ROUTE_LUA)
    config = {
        "Name": "drustage-test", "StorageDirectory": str(tmp_path / "db"), "IndexDirectory": str(tmp_path / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomModalities": {"drustage": ["DRUSTAGE", "127.0.0.1", listen_port]},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "LuaScripts": [str(tmp_path / "route.lua")],
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "w")
    process = subprocess.Popen([binary, str(tmp_path / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port, listen_port)
    try:
        for _ in range(200):
            try:
                server.get("/system")
                break
            except OSError:
                if process.poll() is not None:
                    pytest.fail(f"Orthanc exited: {(tmp_path / 'orthanc.log').read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            pytest.fail("Orthanc did not answer within 20 s")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def dx_films(tmp_path_factory) -> list[Path]:
    """20 DX phantoms, one study each."""
    from drustage.synth.writer import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("dx-films")
    generate_dataset(root, SynthConfig(count=20, seed=21, image_scale=0.4, image_format="dicom"), workers=2,
                     progress=False)
    return sorted((root / "images").glob("*.dcm"))

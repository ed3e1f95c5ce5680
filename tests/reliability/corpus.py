"""A generated corpus of broken, hostile and odd inputs, each with the outcome it must have.

``file_cases(folder)`` writes radiograph files (``drustage info`` and ``predict`` read them),
``label_bodies()`` labelling PUT bodies, ``host_cases()`` requests by Host/Origin, and
``bundle_cases(bundle, folder)`` broken model bundles. Every case names its class (the issue's
numbering: 1 labels, 2 cost, 3 batch, 4 model files, 5 pixels, 6 messages, 7 service) and whether
it must be refused (one clear line) or read.
"""

from __future__ import annotations

import json
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REFUSED, READ = "refused", "read"


@dataclass(frozen=True)
class FileCase:
    name: str
    klass: int
    path: Path
    outcome: str  # REFUSED or READ
    says: str = ""  # a fragment the one-line message must hold


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int, depth: int = 8) -> bytes:
    """A PNG that declares ``width`` x ``height`` and carries almost no data (a decompression bomb's start)."""
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def _dicom(path: Path, rows: int = 64, cols: int = 64, pixels: bytes | None = None, syntax=None, **attributes) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = rows, cols, 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel, ds.PhotometricInterpretation = 0, 1, "MONOCHROME2"
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.PixelData = pixels if pixels is not None else (np.arange(rows * cols, dtype=np.uint16) % 4096).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _deflate_bomb(path: Path, inflated: int) -> Path:
    """A deflated DICOM whose pixel data inflates to ``inflated`` bytes of zeros (streamed, never held)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    small = _dicom(path.with_suffix(".tmp"), syntax=DeflatedExplicitVRLittleEndian)
    raw = small.read_bytes()
    small.unlink()
    # the file meta group ends where the deflated stream starts: write that stream by hand
    start = _deflate_start(raw)
    element = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", inflated)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as handle:
        handle.write(raw[:start])
        handle.write(compressor.compress(element))
        block = bytes(1 << 20)
        for _ in range(inflated >> 20):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return path


def _deflate_start(raw: bytes) -> int:
    """Byte offset after the (0002) file meta group of an encoded DICOM file."""
    offset = 132
    while raw[offset:offset + 2] == b"\x02\x00":
        vr = raw[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            length = struct.unpack("<I", raw[offset + 8:offset + 12])[0]
            offset += 12 + length
        else:
            length = struct.unpack("<H", raw[offset + 6:offset + 8])[0]
            offset += 8 + length
    return offset


def _radiograph(height: int = 96, width: int = 72, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((height, width)) * 200 + 20).astype(np.uint8)


def file_cases(folder: Path) -> list[FileCase]:
    """Radiograph files, each to be refused with one line or read as a grey image."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[FileCase] = []

    def add(name: str, klass: int, filename: str, data: bytes | None, outcome: str, says: str = "") -> None:
        path = folder / filename
        if data is not None:
            path.write_bytes(data)
        cases.append(FileCase(name, klass, path, outcome, says))

    good = _radiograph()
    # 2: small files, huge declared cost
    for width, height in ((16000, 32), (40000, 32), (32, 40000), (5000, 200), (100000, 100000), (30000, 30000)):
        add(f"png declaring {width}x{height}", 2, f"declared-{width}x{height}.png", _png_header_only(width, height),
            REFUSED)
    Image.fromarray(np.zeros((32, 16000), np.uint8)).save(folder / "strip-16000x32.png")
    cases.append(FileCase("real 16000x32 strip", 2, folder / "strip-16000x32.png", REFUSED, "strip"))
    cases.append(FileCase("deflated DICOM inflating to 300 MiB", 2,
                          _deflate_bomb(folder / "deflate-bomb.dcm", 300 << 20), REFUSED, "inflates"))
    # 5: pixels that would be read as garbage
    Image.fromarray(np.zeros((64, 64), bool)).save(folder / "one-bit.png")
    cases.append(FileCase("1-bit PNG", 5, folder / "one-bit.png", REFUSED, "1-bit"))
    for label, value in (("NaN", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        pixels = np.random.default_rng(1).random((64, 64)).astype(np.float32)
        pixels[5, 5] = value
        Image.fromarray(pixels, mode="F").save(folder / f"float-{label}.tif")
        cases.append(FileCase(f"float TIFF with {label}", 5, folder / f"float-{label}.tif", REFUSED, "NaN or infinity"))
    cases.append(FileCase("DICOM rows too few for its pixel data", 5,
                          _dicom(folder / "rows-short.dcm", rows=40, pixels=bytes(64 * 64 * 2)), REFUSED, "pixel data"))
    cases.append(FileCase("DICOM rows too many for its pixel data", 5,
                          _dicom(folder / "rows-long.dcm", rows=64, pixels=bytes(64 * 30 * 2)), REFUSED, "pixel data"))
    for slope in ("NaN", "inf"):
        cases.append(FileCase(f"DICOM RescaleSlope {slope}", 5,
                              _dicom(folder / f"slope-{slope}.dcm", RescaleSlope=slope, RescaleIntercept="0"),
                              REFUSED, "NaN or infinity"))
    buffer = folder / "good.png"
    Image.fromarray(good).save(buffer)
    png = buffer.read_bytes()
    for cut in (0.3, 0.6, 0.9):
        add(f"PNG cut at {cut:.0%}", 5, f"cut-{cut}.png", png[: int(len(png) * cut)], REFUSED)
    Image.fromarray(good).save(folder / "good.jpg", quality=90)
    jpeg = (folder / "good.jpg").read_bytes()
    add("JPEG cut in half", 5, "cut.jpg", jpeg[: len(jpeg) // 2], REFUSED)
    scan = jpeg.find(b"\xff\xda")  # start of scan: the entropy-coded data follows
    garbled = bytearray(jpeg)
    for index in range(scan + 40, min(len(jpeg) - 2, scan + 400), 7):
        garbled[index] = (garbled[index] * 37 + 11) % 255
    middle = scan + (len(jpeg) - scan) // 2
    for label, data in (("bytes overwritten", bytes(garbled)),
                        ("a table marker inside", jpeg[:middle] + b"\xff\xc4" + jpeg[middle:])):
        add(f"JPEG scan with {label}", 5, f"corrupt-scan-{label.split()[1]}.jpg", data, REFUSED)
    Image.fromarray(good).save(folder / "progressive.jpg", quality=85, progressive=True)
    cases.append(FileCase("progressive JPEG", 6, folder / "progressive.jpg", READ))
    # 6: odd but valid files are read; garbage gives one line
    cases.append(FileCase("DICOM with one PixelSpacing value", 6,
                          _dicom(folder / "spacing-one.dcm", PixelSpacing=[0.1]), READ))
    cases.append(FileCase("DICOM with PixelSpacing NaN", 6,
                          _dicom(folder / "spacing-nan.dcm", PixelSpacing=["NaN", "0.1"]), READ))
    full = _dicom(folder / "with-preamble.dcm").read_bytes()
    add("DICOM without its preamble", 6, "no-preamble.dcm", full[132:], READ)
    add("garbage after the DICOM magic", 6, "garbage.dcm", bytes(128) + b"DICM" + bytes(range(256)) * 8, REFUSED)
    add("newline and terminal escape in the name", 6, "evil\nname\x1b[31m.png", b"not an image", REFUSED)
    cases.append(FileCase("a formula as the file name", 6, folder / "=1+2*cmd|'calc'!A0.png", READ))
    Image.fromarray(good).save(folder / "=1+2*cmd|'calc'!A0.png")
    # read as they are: the ordinary odd formats
    for mode in ("RGB", "RGBA", "LA", "P", "I;16"):
        path = folder / f"mode-{mode.replace(';', '')}.png"
        image = Image.fromarray(good)
        if mode == "I;16":
            image = Image.fromarray((good.astype(np.uint16) * 257))
        else:
            image = image.convert(mode)
        image.save(path)
        cases.append(FileCase(f"{mode} PNG", 6, path, READ))
    # fuzz: a known format's magic, then seeded noise; or plain noise under an image name
    rng = np.random.default_rng(2026)
    magics = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff\xe0", "tif": b"II*\x00", "dcm": bytes(128) + b"DICM"}
    for index in range(48):
        suffix = list(magics)[index % 4]
        size = int(rng.integers(1, 4096))
        body = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        prefix = magics[suffix] if index % 3 else b""
        add(f"fuzz {index} ({suffix}{', magic' if prefix else ''})", 6, f"fuzz-{index:02d}.{suffix}", prefix + body,
            REFUSED)
    add("empty file", 6, "empty.png", b"", REFUSED, "empty")
    (folder / "a-folder.png").mkdir(exist_ok=True)
    cases.append(FileCase("a folder named like an image", 6, folder / "a-folder.png", REFUSED, "directory"))
    cases.append(FileCase("a missing file", 6, folder / "missing.png", REFUSED, "no such file"))
    return cases


# 1: labelling PUT bodies that must be refused with 422 and leave the store as it was
BAD_BOXES = {
    "infinity": [1, 1, float("inf"), 50], "minus infinity": [float("-inf"), 1, 30, 50],
    "NaN": [1, 1, float("nan"), 50], "negative": [-500, -500, -100, -100], "1e5": [1, 1, 1e5, 1e5],
    "1e308": [1, 1, 1e308, 1e308], "booleans": [True, True, False, False], "strings": ["1", "2", "30", "40"],
    "reversed": [50, 50, 10, 10], "no area": [10, 10, 10, 40], "three values": [1, 2, 3],
    "five values": [1, 2, 30, 40, 50], "nested": [[1, 2], [30, 40]], "an object": {"x1": 1}, "a number": 7,
    "a string": "1,2,30,40", "tiny": [10, 10, 11, 11], "null inside": [1, None, 30, 40],
    "beyond the right edge": [10, 10, 5000, 40], "below the image": [10, 5000, 30, 5040],
}
BAD_BODIES = {
    "stage of the wrong bone": {"stages": {"radius": "U5"}}, "stage out of range": {"stages": {"radius": "R12"}},
    "stage a number": {"stages": {"radius": 99}}, "unknown bone": {"stages": {"femur": "R7"}},
    "unknown bone box": {"boxes": {"femur": [1, 1, 30, 40]}}, "laterality X": {"laterality": "X"},
    "stages a list": {"stages": ["R7"]}, "boxes a list": {"boxes": [[1, 1, 30, 40]]},
}


def label_bodies() -> dict[str, dict]:
    return {**{f"radius box {name}": {"boxes": {"radius": box}} for name, box in BAD_BOXES.items()}, **BAD_BODIES}


# 2, 5: patient fields of an upload that must be refused with 422 (sex, age_years)
BAD_PATIENT_FIELDS = {
    "sex X": {"sex": "X"}, "sex a sentence": {"sex": "female, probably"}, "age NaN": {"age_years": "NaN"},
    "age infinity": {"age_years": "inf"}, "age negative": {"age_years": "-3"}, "age 1e308": {"age_years": "1e308"},
    "age a word": {"age_years": "twelve"}, "age 200": {"age_years": "200"},
}


# 7: requests by Host and Origin: (headers, method, path, expected status)
def host_cases() -> dict[str, tuple[dict, str, str, int]]:
    evil = {"host": "evil.example"}
    return {
        "rebinding Host on GET": (evil, "GET", "/healthz", 400),
        "rebinding Host on labels": (evil, "GET", "/v1/labelling/items", 400),
        "rebinding Host with a port": ({"host": "evil.example:8000"}, "GET", "/healthz", 400),
        "rebinding Host on the page": (evil, "GET", "/", 400),
        "IP-looking Host": ({"host": "10.0.0.7"}, "GET", "/healthz", 400),
        "empty Host": ({"host": ""}, "GET", "/healthz", 400),
        "localhost with a port": ({"host": "localhost:8000"}, "GET", "/healthz", 200),
        "127.0.0.1": ({"host": "127.0.0.1:8000"}, "GET", "/healthz", 200),
        "IPv6 loopback": ({"host": "[::1]:8000"}, "GET", "/healthz", 200),
        "cross-origin label save": ({"origin": "https://evil.example"}, "PUT", "/v1/labelling/items/x", 403),
        "cross-origin prediction": ({"origin": "https://evil.example"}, "POST", "/v1/predictions", 403),
        "null origin prediction": ({"origin": "null"}, "POST", "/v1/predictions", 403),
        "cross-site fetch metadata": ({"sec-fetch-site": "cross-site"}, "POST", "/v1/predictions", 403),
        "declared body over the limit": ({"content-length": str(1 << 40)}, "POST", "/v1/predictions", 413),
        "same-origin GET with an Origin": ({"origin": "http://localhost:8000"}, "GET", "/healthz", 200),
        "cross-origin GET of health": ({"origin": "https://evil.example"}, "GET", "/healthz", 200),
    }


@dataclass(frozen=True)
class BundleCase:
    name: str
    path: Path
    says: str


def bundle_cases(bundle: Path, folder: Path) -> list[BundleCase]:
    """Broken copies of a good bundle directory; each must be refused naming the problem."""
    cases: list[BundleCase] = []

    def copy(name: str) -> Path:
        target = folder / name
        shutil.copytree(bundle, target)
        return target

    swapped = copy("swapped")
    (swapped / "radius.pt").replace(swapped / "tmp.pt")
    (swapped / "ulna.pt").replace(swapped / "radius.pt")
    (swapped / "tmp.pt").replace(swapped / "ulna.pt")
    cases.append(BundleCase("radius.pt and ulna.pt swapped", swapped, "content differs"))
    manifest = json.loads((bundle / "bundle.json").read_text())
    edits = {
        "bundle.json a list": [manifest],
        "no radius entry": {k: v for k, v in manifest.items() if k != "radius"},
        "radius entry a string": {**manifest, "radius": "net7"},
        "scheme a list": {**manifest, "radius": {**manifest["radius"], "scheme": ["a"]}},
        "scheme without classes": {**manifest, "radius": {**manifest["radius"], "scheme": {"name": "x"}}},
        "wrong format": {**manifest, "format": "other"},
        "version 99": {**manifest, "version": 99},
        "members missing one": {**manifest, "members": {k: v for k, v in manifest["members"].items() if k != "ulna"}},
        "member hash changed": {**manifest, "members": {
            **manifest["members"], "detector": {**manifest["members"]["detector"], "sha256": "0"}}},
    }
    for name, content in edits.items():
        target = copy(name.replace(" ", "-"))
        (target / "bundle.json").write_text(json.dumps(content))
        cases.append(BundleCase(name, target, "bundle.json"))
    truncated = copy("truncated-json")
    (truncated / "bundle.json").write_text(json.dumps(manifest)[:100])
    cases.append(BundleCase("bundle.json cut short", truncated, "invalid JSON"))
    cut = copy("cut-weights")
    data = (cut / "radius.pt").read_bytes()
    (cut / "radius.pt").write_bytes(data[: len(data) // 2])
    cases.append(BundleCase("radius.pt cut in half", cut, "radius.pt"))
    # a zip whose member claims far more than a checkpoint
    bomb = folder / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.write(bundle / "bundle.json", "bundle.json")
        for name in ("radius.pt", "ulna.pt"):
            handle.write(bundle / name, name)
        with handle.open("detector.pt", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(1100):
                member.write(block)
    cases.append(BundleCase("zip member inflating to 1.1 GiB", bomb, "inflate"))
    return cases

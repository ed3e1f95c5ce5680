"""Service state: results in SQLite survive a restart within the retention limit; the audit log
records each prediction and label save without names or ids of patients or files."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from drustage.io_utils import file_sha256
from drustage.service.app import ServiceConfig, create_app


def _client(trained, state_dir, label_dir=None, **overrides):
    app = create_app(ServiceConfig(model=trained[1], label_dir=label_dir, detection_threshold=0.0,
                                   state_dir=state_dir, **overrides))
    return TestClient(app, base_url="http://localhost")


def _upload(client, path):
    with open(path, "rb") as handle:
        response = client.post("/v1/predictions", files={"file": ("secret-name.png", handle)},
                               headers=client.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def films(trained):
    return sorted((trained[0] / "old/images").glob("*.png"))[:3]


def test_results_survive_a_restart_within_the_retention_limit(trained, films, tmp_path):
    with _client(trained, tmp_path / "state", max_results=2) as client:
        first, second, third = (_upload(client, path) for path in films)
    with _client(trained, tmp_path / "state", max_results=2) as client:  # a restart
        assert client.get(f"/v1/predictions/{first['id']}").status_code == 404  # beyond the limit
        kept = client.get(f"/v1/predictions/{third['id']}").json()
        assert kept["radius"] == third["radius"] and kept["input_sha256"] == file_sha256(films[2])
        assert client.get(third["links"]["overlay"]).headers["content-type"] == "image/png"
        assert client.get(third["links"]["radius_crop"]).status_code == 200
        listing = client.get("/v1/predictions").json()
    assert [item["id"] for item in listing["items"]] == [third["id"], second["id"]]
    assert listing["items"][0]["radius"]["prediction"] == third["radius"]["prediction"]


def test_without_a_state_folder_results_live_in_memory(trained, films, tmp_path):
    with _client(trained, None) as client:
        result = _upload(client, films[0])
        assert client.get(f"/v1/predictions/{result['id']}").status_code == 200
    with _client(trained, None) as client:
        assert client.get(f"/v1/predictions/{result['id']}").status_code == 404


def test_audit_log_records_predictions_and_label_saves(trained, films, label_dir, tmp_path):
    token = "s3cret-token-value"
    with _client(trained, tmp_path / "state", label_dir, token=token) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        result = _upload(client, films[0])
        image_id = client.get("/v1/labelling/items").json()["items"][0]["image_id"]
        body = {"stages": {"radius": "R7", "ulna": "U5"}, "laterality": "L"}
        assert client.put(f"/v1/labelling/items/{image_id}", json=body).status_code == 200
    text = (tmp_path / "state/audit.jsonl").read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["action"] for e in entries] == ["predict", "label-save"]
    assert entries[0]["input_sha256"] == file_sha256(films[0]) and entries[0]["result_id"] == result["id"]
    labelled = next(path for path in label_dir.iterdir() if path.stem == image_id or path.name.startswith(image_id))
    assert entries[1]["input_sha256"] == file_sha256(labelled) and entries[1]["stages"] == body["stages"]
    assert {e["model_fingerprint"] for e in entries} == {result["model_fingerprint"]}
    assert all(e["client"].startswith("token:") for e in entries)
    for secret in (token, "secret-name", image_id, films[0].name, labelled.name):
        assert secret not in text


def test_a_dicom_upload_gives_its_sr_and_sc_in_its_study(trained, tmp_path):
    import io

    import pydicom

    from drustage.outputs.dicom import read_structured_report
    from drustage.synth.writer import SynthConfig, generate_dataset

    generate_dataset(tmp_path / "dx", SynthConfig(count=1, seed=8, image_scale=0.4, image_format="dicom"),
                     workers=1, progress=False)
    path = next((tmp_path / "dx/images").glob("*.dcm"))
    source = pydicom.dcmread(path)
    with _client(trained, tmp_path / "state") as client:
        result = _upload(client, path)
        assert "Doe" not in json.dumps(result) and source.PatientID not in json.dumps(result)
        sr = pydicom.dcmread(io.BytesIO(client.get(result["links"]["structured_report"]).content))
        sc = pydicom.dcmread(io.BytesIO(client.get(result["links"]["secondary_capture"]).content))
        png = _upload(client, sorted((trained[0] / "old/images").glob("*.png"))[0])
        assert "structured_report" not in png["links"]
        assert client.get(f"/v1/predictions/{png['id']}/sr.dcm").status_code == 404
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == source.StudyInstanceUID
    back = read_structured_report(sr)
    for bone in ("radius", "ulna"):
        assert back["bones"][bone]["prediction"] == result[bone]["prediction"]
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"] and sc.pixel_array.ndim == 3

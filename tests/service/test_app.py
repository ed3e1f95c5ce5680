"""REST API through an HTTP client: predictions as the CLI makes them, images, errors, labelling."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from drustage.data.layout import read_dataset
from drustage.imaging import load_radiograph
from drustage.inference.bundle import load_bundle
from drustage.io_utils import file_sha256
from drustage.pipeline import Predictor
from drustage.stages import BONES


def _phantom(trained, group="old", index=0):
    root, _ = trained
    return sorted((root / group / "images").glob("*.png"))[index]


def _post(client, path, name="x.png"):
    with open(path, "rb") as handle:
        return client.post("/v1/predictions", files={"file": (name, handle, "application/octet-stream")})


def test_health_and_openapi(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["labelling"] is True
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/predictions" in paths and "/v1/predictions/{result_id}/overlay.png" in paths


def test_prediction_equals_the_library_result(client, trained):
    path = _phantom(trained)
    response = _post(client, path, name="Doe_Jane_1234.png")
    assert response.status_code == 201
    body = response.json()
    expected = Predictor(load_bundle(trained[1]), detection_threshold=0.0).predict(
        load_radiograph(path), file_sha256(path)).to_dict()
    for key in ("input_sha256", "image_size", "laterality", "guidance", "needs_review", "model_fingerprint"):
        assert body[key] == expected[key]
    for bone in BONES:
        assert body[bone]["prediction"] == expected[bone]["prediction"]
        assert body[bone]["box"] == pytest.approx(expected[bone]["box"])
    # the client's file name may identify a patient: never echoed
    assert body["source"] == "upload" and "Doe" not in response.text
    assert client.get(body["links"]["self"]).json()["radius"] == body["radius"]


def implausible_age(phase: str) -> float:
    """An age at which a radius reading of ``phase`` is implausible for a girl."""
    return 18.0 if phase in ("pre-peak", "peak") else 5.0


def test_the_patients_sex_and_age_check_the_reading_and_are_not_echoed(client, trained):
    path = _phantom(trained, "old")
    phase = _post(client, path).json()["radius"]["phase"]  # boxes from the barely trained detector
    with open(path, "rb") as handle:
        response = client.post("/v1/predictions", files={"file": ("x.png", handle, "application/octet-stream")},
                               data={"sex": "F", "age_years": str(implausible_age(phase))})
    assert response.status_code == 201
    reasons = response.json()["review_reasons"]
    assert any(r.startswith("radius: ") and "implausible for the patient's age" in r for r in reasons)
    assert "age_years" not in response.text and '"sex"' not in response.text
    with open(path, "rb") as handle:
        plausible = client.post("/v1/predictions", files={"file": ("x.png", handle, "application/octet-stream")},
                                data={"sex": "F", "age_years": "13"}).json()  # plausible for every phase
    assert plausible["radius"]["phase"] == phase
    assert not any(r.startswith("radius: ") and "implausible" in r for r in plausible["review_reasons"])
    with open(path, "rb") as handle:
        bad = client.post("/v1/predictions", files={"file": ("x.png", handle, "application/octet-stream")},
                          data={"sex": "unknown-value"})
    assert bad.status_code == 422 and "sex must be F or M" in bad.text


def test_result_images(client, trained):
    body = _post(client, _phantom(trained)).json()
    image = Image.open(io.BytesIO(client.get(body["links"]["image"]).content))
    height, width = body["image_size"]
    assert max(image.size) <= 1200 and abs(image.size[0] / image.size[1] - width / height) < 0.01
    overlay = Image.open(io.BytesIO(client.get(body["links"]["overlay"]).content))
    assert overlay.size[1] == 900 and overlay.size[0] > 420  # radiograph plus the side panel
    plain = np.asarray(Image.open(io.BytesIO(client.get(body["links"]["radius_crop"]).content)))
    heat = np.asarray(Image.open(io.BytesIO(client.get(body["links"]["radius_crop"] + "?gradcam=true").content)))
    assert plain.shape == heat.shape == (128, 96, 3)
    assert np.abs(plain.astype(int) - heat.astype(int)).mean() > 5  # the heatmap is drawn on the crop
    assert client.get(body["links"]["overlay"] + "?gradcam=true").status_code == 200


def test_bad_uploads_get_4xx_with_a_message(client, trained, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image at all, just text " * 10)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_phantom(trained).read_bytes()[:2000])
    cases = {empty: (400, "empty"), text: (415, "not a PNG"), truncated: (422, "unreadable radiograph")}
    for path, (status, words) in cases.items():
        response = _post(client, path)
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]
        assert str(tmp_path) not in response.text
    assert client.post("/v1/predictions").status_code == 422  # no file field


def test_upload_size_limit(trained, tmp_path):
    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (1200, 1000), dtype=np.uint16)).save(big)
    assert big.stat().st_size > 1 << 20
    with TestClient(create_app(ServiceConfig(model=trained[1], max_upload_bytes=1 << 20)),
                    base_url="http://localhost") as small_client:
        response = _post(small_client, big)
    assert response.status_code == 413 and "1 MiB" in response.json()["detail"]


def test_unknown_and_malformed_ids(client):
    assert client.get("/v1/predictions/" + "0" * 32).status_code == 404
    assert client.get("/v1/predictions/../../etc/passwd").status_code == 404
    assert client.get("/v1/predictions/not-an-id/overlay.png").status_code == 422
    assert client.get("/v1/labelling/items/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_dicom_headers_stay_out_of_responses(client, trained, tmp_path):
    import pydicom

    from drustage.synth.writer import write_dicom

    path = tmp_path / "study.dcm"
    pixels = (load_radiograph(_phantom(trained)).image * 4095).astype(np.uint16)
    write_dicom(path, pixels, 0.2, "R", "x")
    ds = pydicom.dcmread(path)
    ds.PatientName, ds.PatientID, ds.InstitutionName = "Doe^Jane", "SECRET-123", "St Elsewhere"
    ds.save_as(path)
    response = _post(client, path, name="study.dcm")
    assert response.status_code == 201
    assert response.json()["laterality"] == "R" and response.json()["laterality_source"] == "metadata"
    for secret in ("Doe", "SECRET", "Elsewhere"):
        assert secret not in response.text


def test_concurrent_predictions_on_a_live_server(live_server, trained):
    import httpx2

    paths = [_phantom(trained, group, i) for group in ("young", "old") for i in range(4)]

    def send(path):
        with open(path, "rb") as handle, httpx2.Client(base_url=live_server, timeout=60) as http:
            response = http.post("/v1/predictions", files={"file": ("x.png", handle)})
        return path, response

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, paths))
    assert all(response.status_code == 201 for _, response in results)
    # each answer belongs to its own upload
    assert all(response.json()["input_sha256"] == file_sha256(path) for path, response in results)


def test_labelling_round_trip(client, label_dir):
    listing = client.get("/v1/labelling/items").json()
    assert listing["count"] == 4 and listing["complete"] == 0
    first = listing["next_unlabelled"]
    item = client.get(f"/v1/labelling/items/{first}").json()
    assert set(item["proposed_boxes"]) == set(BONES)  # the detector's proposals
    assert Image.open(io.BytesIO(client.get(f"/v1/labelling/items/{first}/image.png").content)).size[0] > 0
    body = {"stages": {"radius": "R10", "ulna": "U8"}, "laterality": "L",
            "boxes": {"radius": [10, 20, 110, 140], "ulna": [120, 25, 180, 130]}}
    saved = client.put(f"/v1/labelling/items/{first}", json=body).json()
    assert saved["complete"] and saved["next_unlabelled"] not in (None, first)
    record = {r.image_id: r for r in read_dataset(label_dir).records}[first]
    assert record.stages["radius"].code == "R10" and record.stages["ulna"].code == "U8"
    assert record.boxes["ulna"] == (120, 25, 180, 130) and record.laterality == "L"
    after_first = client.get("/v1/labelling/items", params={"after": first}).json()
    assert after_first["complete"] == 1 and after_first["next_unlabelled"] == saved["next_unlabelled"]


def test_labelling_rejects_bad_labels(client, label_dir):
    first = client.get("/v1/labelling/items").json()["next_unlabelled"]
    bad = [{"stages": {"radius": "R12"}}, {"stages": {"radius": "U3"}}, {"boxes": {"radius": [5, 5, 1, 1]}},
           {"boxes": {"radius": [1, 2, 3]}}, {"boxes": {"femur": [1, 2, 3, 4]}}, {"laterality": "X"}]
    for body in bad:
        response = client.put(f"/v1/labelling/items/{first}", json=body)
        assert response.status_code == 422, body
    assert not (label_dir / "labels.csv").exists()  # nothing half-saved
    assert client.put("/v1/labelling/items/nope", json={}).status_code == 404


def test_labelling_off_without_a_folder(trained):
    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    with TestClient(create_app(ServiceConfig(model=trained[1])), base_url="http://localhost") as plain:
        response = plain.get("/v1/labelling/items")
    assert response.status_code == 404 and "--label-dir" in response.json()["detail"]


def test_a_shut_down_app_lets_go_of_its_models(trained, tmp_path):
    """FastAPI's module-level caches keep every endpoint (and what it closes over) alive: the app
    must drop its models at shutdown, or each app built in a process keeps ~40-90 MB."""
    import gc
    import weakref

    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    app = create_app(ServiceConfig(model=trained[1], state_dir=None))
    predictor = weakref.ref(app.state.engine.predictor)
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/healthz").status_code == 200
    del app, client
    gc.collect()
    assert predictor() is None

"""The reliability corpus (``corpus.py``): every broken, hostile or odd input gets its outcome.

Refused inputs give one line naming the item and the problem (never a traceback); batches
report bad items and carry on; the service answers 4xx and its stores stay usable; nothing is
left half-written; decoding runs under a 1.5 GB address-space cap.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import BAD_PATIENT_FIELDS, READ, REFUSED, bundle_cases, file_cases, host_cases, label_bodies

MEMORY_CAP = 1536 << 20


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    return file_cases(tmp_path_factory.mktemp("corpus"))


def test_the_corpus_is_large_and_covers_every_class(corpus_files, trained, tmp_path):
    uploads = len(corpus_files) + len(BAD_PATIENT_FIELDS)  # every file is uploaded too
    count = (len(corpus_files) + uploads + len(label_bodies()) + len(host_cases())
             + len(bundle_cases(trained[1], tmp_path)))
    assert count >= 150
    assert {case.klass for case in corpus_files} == {2, 5, 6}


def test_every_file_is_read_or_refused_in_one_line_naming_it(corpus_files):
    from drustage.imaging import RadiographError, load_radiograph
    from drustage.io_utils import printable

    for case in corpus_files:
        try:
            radiograph = load_radiograph(case.path)
        except RadiographError as error:
            assert case.outcome == REFUSED, f"{case.name}: refused ({error})"
            message = str(error)
            assert "\n" not in message and "\x1b" not in message, case.name
            assert message.startswith(printable(case.path)) and case.says in message, (case.name, message)
        else:
            assert case.outcome == READ, f"{case.name}: read, expected refused"
            image = radiograph.image
            assert image.ndim == 2 and image.dtype.name == "float32"
            assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0, case.name


def _capped(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, preexec_fn=limit, env=env, timeout=300)


def test_info_reads_the_whole_corpus_under_the_memory_cap(corpus_files, tmp_path):
    names = [case.path.name for case in corpus_files]
    folder = corpus_files[0].path.parent
    done = _capped([sys.executable, "-m", "drustage.cli", "info", *names], folder)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("drustage: error:")]
    assert len(errors) == sum(case.outcome == REFUSED for case in corpus_files)
    printed = [json.loads(line) for line in done.stdout.splitlines()]  # strict JSON: no NaN
    assert len(printed) == sum(case.outcome == READ for case in corpus_files)


def test_every_file_uploaded_gets_a_4xx_or_a_reading(client, corpus_files):
    wrong = []
    for case in corpus_files:
        if case.path.is_dir() or not case.path.exists():
            continue  # nothing to upload
        with open(case.path, "rb") as handle:
            response = client.post("/v1/predictions", files={"file": ("upload", handle, "application/octet-stream")})
        expected = (201,) if case.outcome == READ else (400, 413, 415, 422)
        detail = response.json().get("detail", "") if response.status_code != 201 else ""
        if response.status_code not in expected or "\n" in str(detail) or str(case.path.parent) in str(detail):
            wrong.append((case.name, response.status_code, detail))
    assert not wrong


@pytest.mark.parametrize("name", sorted(BAD_PATIENT_FIELDS))
def test_hostile_patient_fields_are_refused(client, corpus_files, name):
    good = next(case.path for case in corpus_files if case.name == "RGB PNG")
    with open(good, "rb") as handle:
        response = client.post("/v1/predictions", files={"file": ("upload", handle, "image/png")},
                               data=BAD_PATIENT_FIELDS[name])
    assert response.status_code == 422, (name, response.text)


def _good_phantoms(trained, count: int) -> list[Path]:
    return sorted((trained[0] / "young" / "images").glob("*.png"))[:count]


def test_a_batch_reports_each_bad_item_and_carries_on(trained, tmp_path):
    from drustage.cli import main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = _good_phantoms(trained, 2)
    shutil.copy(good[0], inputs / "plain.png")
    shutil.copy(good[1], inputs / ("x" * 240 + ".png"))  # the output names would pass the file-system limit
    shutil.copy(good[0], inputs / "=1+2*cmd|'calc'!A0.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("file,bone,x1,y1,x2,y2\n"
                     + "".join(f"{name},radius,10,10,60,60\n{name},ulna,70,10,120,60\n"
                               for name in ("plain.png", "x" * 240 + ".png", "=1+2*cmd|'calc'!A0.png"))
                     + "broken.png,radius,10,10,60,60\nbroken.png,ulna,70,10,120,60\n")
    out = tmp_path / "out"
    code = main(["predict", str(inputs), str(empty), "--model", str(trained[1]), "--out", str(out), "--quiet",
                 "--threshold", "0"])
    assert code == 1
    with open(out / "summary.csv", newline="") as handle:
        sources = [row["source"] for row in csv.DictReader(handle)]
    assert sorted(sources) == sorted(["plain.png", "x" * 240 + ".png", "'=1+2*cmd|'calc'!A0.png"])
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind
    # boxes far outside the image: that item fails with one line, the others are read
    far = tmp_path / "far.csv"
    far.write_text(boxes.read_text().replace("plain.png,radius,10,10,60,60", "plain.png,radius,10,10,60000,60"))
    code = main(["predict", str(inputs / "plain.png"), str(inputs / ("x" * 240 + ".png")), "--model", str(trained[1]),
                 "--out", str(tmp_path / "out-far"), "--quiet", "--boxes", str(far)])
    assert code == 1
    with open(tmp_path / "out-far" / "summary.csv", newline="") as handle:
        assert [row["source"] for row in csv.DictReader(handle)] == ["x" * 240 + ".png"]


def test_import_lists_unreadable_files_and_boxes_off_the_image(trained, tmp_path, capsys):
    from drustage.cli import main
    from drustage.data.layout import read_dataset

    images = tmp_path / "images"
    images.mkdir()
    good = _good_phantoms(trained, 2)
    for index, source in enumerate(good):
        shutil.copy(source, images / f"good{index}.png")
    for index in range(3):
        (images / f"junk{index}.png").write_bytes(b"junk" * (index + 1))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("file,bone,x1,y1,x2,y2\ngood0.png,radius,10,10,60,60\ngood1.png,radius,10,10,1e9,60\n")
    assert main(["import", str(images), "--out", str(tmp_path / "ds"), "--boxes", str(boxes)]) == 1
    printed = capsys.readouterr().out
    assert printed.count("not imported:") == 3 and printed.count("box left out:") == 1
    records = {r.file.split("-", 1)[1]: r for r in read_dataset(tmp_path / "ds").records}
    assert set(records) == {"good0.png", "good1.png"}
    assert "radius" in records["good0.png"].boxes and not records["good1.png"].boxes


@pytest.mark.parametrize("name", sorted(label_bodies()))
def test_a_bad_label_save_is_refused_and_changes_nothing(client, label_dir, name):
    items = client.get("/v1/labelling/items").json()["items"]
    image_id = items[0]["image_id"]
    before = client.get(f"/v1/labelling/items/{image_id}").json()
    response = client.put(f"/v1/labelling/items/{image_id}",
                          content=json.dumps(label_bodies()[name]), headers={"content-type": "application/json"})
    assert response.status_code == 422, (name, response.text)
    assert str(label_dir) not in response.json()["detail"]  # the server's folder stays on the server
    assert client.get(f"/v1/labelling/items/{image_id}").json() == before
    good = {"stages": {"radius": "R3"}, "boxes": {"radius": [10, 10, 60, 60]}}
    assert client.put(f"/v1/labelling/items/{image_id}", json=good).status_code == 200


def test_a_bad_row_on_disk_is_reported_and_skipped_never_fatal(trained, label_dir, caplog):
    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    with TestClient(create_app(ServiceConfig(model=trained[1], label_dir=label_dir)), base_url="http://localhost") as c:
        image_id = c.get("/v1/labelling/items").json()["items"][0]["image_id"]
        assert c.put(f"/v1/labelling/items/{image_id}", json={"boxes": {"radius": [10, 10, 60, 60]}}).status_code == 200
    labels = label_dir / "labels.csv"
    labels.write_text(labels.read_text().replace("60.0", "inf", 1))
    with TestClient(create_app(ServiceConfig(model=trained[1], label_dir=label_dir)), base_url="http://localhost") as c:
        listing = c.get("/v1/labelling/items")
        assert listing.status_code == 200 and listing.json()["count"] == 4  # the image is offered again
        assert c.put(f"/v1/labelling/items/{image_id}", json={"stages": {"radius": "R2"}}).status_code == 200
    assert "not a finite number" in caplog.text


@pytest.mark.parametrize("name", sorted(host_cases()))
def test_host_and_origin_checks(client, name):
    headers, method, path, status = host_cases()[name]
    response = client.request(method, path, headers=headers)
    if status == 200:
        assert response.status_code == 200, (name, response.text)
    else:
        assert response.status_code == status, (name, response.status_code, response.text)


def test_a_chunked_upload_is_stopped_at_the_limit(trained):
    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
        for _ in range(4):
            yield bytes(1 << 20)
        yield b"\r\n--b--\r\n"

    with TestClient(create_app(ServiceConfig(model=trained[1], max_upload_bytes=1 << 20)),
                    base_url="http://localhost") as small:
        response = small.post("/v1/predictions", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413 and "MiB limit" in response.json()["detail"]


def test_a_token_is_required_when_set(trained):
    from fastapi.testclient import TestClient

    from drustage.service.app import ServiceConfig, create_app

    app = create_app(ServiceConfig(model=trained[1], token="s3cret-token"))
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/healthz").status_code == 401
        assert c.get("/healthz", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/healthz", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        page = c.get("/?token=s3cret-token")
        assert page.status_code == 200 and "drustage_token" in page.headers["set-cookie"]
        assert c.get("/healthz").status_code == 200  # the page's cookie now carries it
        c.cookies.clear()
        assert c.get("/docs").status_code == 401


def test_the_api_page_loads_nothing_from_elsewhere(client):
    page = client.get("/docs").text
    assert "cdn" not in page and "https://" not in page.replace("https://github", "")
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert client.get(asset).status_code == 200


def test_serve_beyond_loopback_warns_and_needs_a_token(trained, monkeypatch, capsys):
    from drustage import cli

    seen = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: seen.update(app=app, **kw))
    assert cli.main(["serve", "--model", str(trained[1]), "--host", "0.0.0.0", "--allow-host", "reader.local"]) == 0
    printed = capsys.readouterr()
    assert "warning: listening on 0.0.0.0" in printed.err and "?token=" in printed.out
    assert seen["access_log"] is False
    from fastapi.testclient import TestClient

    with TestClient(seen["app"], base_url="http://reader.local") as c:
        assert c.get("/healthz").status_code == 401  # the name is allowed, the token still needed


def test_every_broken_bundle_is_refused_in_one_line(trained, tmp_path, monkeypatch):
    from drustage.inference.bundle import BundleError, load_bundle
    from drustage.inference.checkpoints import CheckpointError
    from drustage.pipeline import Predictor

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for case in bundle_cases(trained[1], tmp_path / "cases"):
        with pytest.raises((BundleError, CheckpointError)) as caught:
            Predictor(load_bundle(case.path))
        message = str(caught.value)
        assert "\n" not in message and case.says in message, (case.name, message)
    assert not list((tmp_path / "cache").rglob("detector.pt"))  # the bomb left nothing in the cache


def test_malformed_box_and_weights_files_give_one_line(tmp_path):
    import pickle

    from drustage.data.annotations import read_boxes
    from drustage.data.layout import DatasetError
    from drustage.models.config import DetectorConfig
    from drustage.models.detector import build_detector

    coco = {"categories": [{"id": 1, "name": "radius"}], "images": [{"id": 1, "file_name": "a.png"}]}
    for name, annotation in {"bbox a string": {"bbox": "abcd"}, "bbox with a string": {"bbox": [1, 2, "3", 4]},
                             "no bbox": {}, "bbox of booleans": {"bbox": [True, True, True, True]},
                             "unknown image": {"bbox": [1, 2, 30, 40], "image_id": 9}}.items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_text(json.dumps({**coco, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, **annotation}]}))
        with pytest.raises(DatasetError) as caught:
            read_boxes(path)
        assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value), name

    class Hostile:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    import torch

    good = tmp_path / "good.pt"
    torch.save(build_detector(DetectorConfig(min_size=64, max_size=64, representation_size=8)).state_dict(), good)
    weights = {"truncated": good.read_bytes()[:1000], "hostile pickle": pickle.dumps(Hostile()),
               "text": b"hello", "a list": None}
    for name, data in weights.items():
        path = tmp_path / f"{name.replace(' ', '-')}.pt"
        if data is None:
            torch.save([1, 2, 3], path)
        else:
            path.write_bytes(data)
        with pytest.raises(ValueError) as caught:
            build_detector(DetectorConfig(), weights=path)
        assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value), name
    assert not (tmp_path / "pwned").exists()

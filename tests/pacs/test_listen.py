"""drustage listen against a real Orthanc: routing by Lua, C-STORE and STOW-RS back, the queue's
skips, retries and errors, and 20 studies across a kill -9 and restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

from drustage.inference.bundle import load_bundle
from drustage.pacs.node import DicomNode, Destination, ListenConfig, send_cstore
from drustage.pacs.queue import JobQueue
from drustage.pipeline import Predictor

SR_CLASS, SC_CLASS = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7"


def study_instances(orthanc, study_uid: str) -> list[dict]:
    try:
        with urllib.request.urlopen(f"{orthanc.dicomweb}/studies/{study_uid}/instances", timeout=30) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return []
        raise
    return json.loads(body) if body else []


def classes(instances: list[dict]) -> list[str]:
    return sorted(i["00080016"]["Value"][0] for i in instances)


def retrieve(orthanc, study: str, instance: dict) -> pydicom.Dataset:
    """WADO-RS: one instance as multipart/related application/dicom."""
    import io

    series, sop = instance["0020000E"]["Value"][0], instance["00080018"]["Value"][0]
    request = urllib.request.Request(f"{orthanc.dicomweb}/studies/{study}/series/{series}/instances/{sop}",
                                     headers={"Accept": 'multipart/related; type="application/dicom"'})
    with urllib.request.urlopen(request, timeout=30) as response:
        boundary = response.headers.get_param("boundary")
        body = response.read()
    part = body.split(f"--{boundary}".encode())[1]
    return pydicom.dcmread(io.BytesIO(part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]))


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def predictor(trained):
    # the session detector is barely trained: threshold 0 keeps its best boxes
    return Predictor(load_bundle(trained[1]), detection_threshold=0.0)


def node_for(predictor, spool: Path, port: int, destination: str, **overrides) -> DicomNode:
    node = DicomNode(ListenConfig(spool=spool, destination=destination, port=port, poll_s=0.05, **overrides),
                     predictor)
    node.start()
    return node


def test_a_routed_radiograph_comes_back_as_sr_and_sc_in_its_study(orthanc, predictor, dx_films, tmp_path):
    from drustage.outputs.dicom import read_structured_report

    node = node_for(predictor, tmp_path / "spool", orthanc.listen_port, f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    try:
        orthanc.post("/instances", dx_films[0].read_bytes())  # Orthanc's Lua rule routes it to the node
        study = str(pydicom.dcmread(dx_films[0], stop_before_pixels=True).StudyInstanceUID)
        instances = wait_for(lambda: (i := study_instances(orthanc, study)) and len(i) == 3 and i, 60,
                             "the SR and SC in Orthanc")
    finally:
        node.stop()
    assert classes(instances) == sorted([SR_CLASS, SC_CLASS, pydicom.dcmread(dx_films[0]).SOPClassUID])
    sop = str(pydicom.dcmread(dx_films[0], stop_before_pixels=True).SOPInstanceUID)
    report = json.loads((tmp_path / "spool/results" / sop / "source.json").read_text())
    sr = retrieve(orthanc, study, next(i for i in instances if i["00080016"]["Value"][0] == SR_CLASS))
    back = read_structured_report(sr)
    for bone in ("radius", "ulna"):
        assert back["bones"][bone]["prediction"] == report[bone]["prediction"]
        assert back["bones"][bone]["confidence"] == pytest.approx(report[bone]["confidence"])
    assert back["model_fingerprint"] == report["model_fingerprint"]


def test_stow_rs_destination_and_skipped_objects(orthanc, predictor, dx_films, tmp_path):
    port = orthanc.listen_port
    node = node_for(predictor, tmp_path / "spool", port, orthanc.dicomweb)
    try:
        to_node = Destination(ae_title="DRUSTAGE", host="127.0.0.1", port=port)
        send_cstore([dx_films[1]], to_node, "TESTSCU")
        study = str(pydicom.dcmread(dx_films[1], stop_before_pixels=True).StudyInstanceUID)
        instances = wait_for(lambda: (i := study_instances(orthanc, study)) and len(i) == 2 and i, 60,
                             "the SR and SC stored by STOW-RS")
        assert classes(instances) == sorted([SR_CLASS, SC_CLASS])
        sop = str(pydicom.dcmread(dx_films[1], stop_before_pixels=True).SOPInstanceUID)
        sr_path = tmp_path / "spool/results" / sop / "source.sr.dcm"
        send_cstore([sr_path, dx_films[1]], to_node, "TESTSCU")  # an SR, and the same radiograph again
        skipped = wait_for(lambda: node.queue.jobs("skipped"), 10, "the SR to be skipped")
    finally:
        node.stop()
    assert "not a radiograph" in skipped[0].reason
    queue = JobQueue(tmp_path / "spool/queue.sqlite")
    assert queue.counts()["done"] == 1 and len(queue.jobs()) == 2  # the resend was not read again
    assert len(study_instances(orthanc, study)) == 2


def test_an_unreachable_destination_is_retried_then_a_visible_error(predictor, dx_films, tmp_path, new_port):
    port = new_port()
    node = node_for(predictor, tmp_path / "spool", port, f"NOBODY@127.0.0.1:{new_port()}", max_attempts=2,
                    backoff_s=0.05)
    try:
        send_cstore([dx_films[2]], Destination(ae_title="DRUSTAGE", host="127.0.0.1", port=port), "TESTSCU")
        failed = wait_for(lambda: node.queue.jobs("error"), 60, "the job to end as an error")
    finally:
        node.stop()
    assert failed[0].attempts == 2 and "no association with NOBODY" in failed[0].reason


@pytest.mark.parametrize("destination,problem", [("nowhere", "AE@host:port"), ("A@h:99999", "AE@host:port")])
def test_bad_destinations_are_one_line_errors(destination, problem, tmp_path):
    with pytest.raises(ValueError, match=problem):
        ListenConfig(spool=tmp_path, destination=destination).checked()


def _start_listen(trained, spool: Path, orthanc, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "drustage", "listen", "--model", str(trained[1]), "--spool", str(spool),
               "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", "--port", str(orthanc.listen_port),
               "--threshold", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
    ready = process.stdout.readline()
    assert "listening as DRUSTAGE" in ready, log.read_text()[-2000:]
    return process


def test_twenty_studies_across_a_kill_and_restart_get_one_sr_and_one_sc_each(orthanc, trained, dx_films, tmp_path):
    spool, log = tmp_path / "spool", tmp_path / "listen.log"
    process = _start_listen(trained, spool, orthanc, log)
    uploads = [threading.Thread(target=orthanc.post, args=("/instances", film.read_bytes())) for film in dx_films]
    for upload in uploads:
        upload.start()
    for upload in uploads:
        upload.join()
    queue = JobQueue(spool / "queue.sqlite")
    # every image received, some read and sent, not all: then kill -9 in the middle of the work
    wait_for(lambda: sum(queue.counts().values()) == 20 and queue.counts()["done"] >= 2, 90,
             "listen to receive all 20 and send a few")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert queue.counts()["done"] < 20, "the kill came too late to test a restart"
    process = _start_listen(trained, spool, orthanc, log)
    try:
        wait_for(lambda: queue.counts()["done"] == 20, 120, "all 20 done after the restart")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    for film in dx_films:
        study = str(pydicom.dcmread(film, stop_before_pixels=True).StudyInstanceUID)
        assert classes(study_instances(orthanc, study)) == sorted([SR_CLASS, SC_CLASS, pydicom.dcmread(
            film, stop_before_pixels=True).SOPClassUID]), study
    assert queue.counts()["error"] == 0

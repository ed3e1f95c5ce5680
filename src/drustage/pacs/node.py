"""``drustage listen``: a DICOM node that reads the hand radiographs a PACS sends it and sends the
results back into the same study.

A C-STORE SCP (pynetdicom) accepts any storage object; a hand or wrist radiograph (CR, DX or a
secondary capture of a film) is written to the spool and queued (``JobQueue``) before the store is
acknowledged; anything else is skipped with its reason logged and kept in the queue as ``skipped``.
A worker reads each queued image with the bundle, writes the JSON, overlay, DICOM SR and Secondary
Capture under ``results/<SOP Instance UID>/`` and sends the SR and SC by C-STORE to the destination
(``AE@host:port``) or by STOW-RS (an ``http(s)://`` DICOMweb base URL). The outputs' UIDs derive from
the source and the bundle, so a send repeated after a crash stores the same instances again.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from drustage.io_utils import atomic_path, printable
from drustage.pacs.queue import JobQueue

__all__ = ["Destination", "DicomNode", "ListenConfig", "send_cstore", "send_stow"]

log = logging.getLogger(__name__)

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# DICOM status codes (PS3.4 annex B): success, and "cannot understand" for a store that cannot be kept
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC000, 0xA700


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (``AE@host:port``) or a DICOMweb base URL for STOW-RS."""

    ae_title: str | None = None
    host: str | None = None
    port: int | None = None
    stow_url: str | None = None

    @classmethod
    def parse(cls, text: str) -> Destination:
        if text.startswith(("http://", "https://")):
            return cls(stow_url=text.rstrip("/"))
        match = re.fullmatch(r"([^@\\]{1,16})@([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})", text)
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ValueError(f"destination {printable(text)!r}: give AE@host:port or a DICOMweb http(s):// URL")
        return cls(ae_title=match.group(1), host=match.group(2).strip("[]"), port=int(match.group(3)))

    def __str__(self) -> str:
        return self.stow_url or f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class ListenConfig:
    spool: Path
    destination: str  # AE@host:port or a DICOMweb base URL
    ae_title: str = "DRUSTAGE"
    host: str = "127.0.0.1"
    port: int = 11112
    max_attempts: int = 5  # per job, then it ends as a visible error
    backoff_s: float = 2.0  # delay before the first retry; doubled each time
    poll_s: float = 0.2  # how often an idle worker looks at the queue

    def checked(self) -> ListenConfig:
        if not re.fullmatch(r"[ -\[\]-~]{1,16}", self.ae_title) or not self.ae_title.strip():
            raise ValueError(f"AE title {printable(self.ae_title)!r}: 1-16 printable characters, no backslash")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port}: choose 1-65535")
        Destination.parse(self.destination)
        return self


def send_cstore(paths: list[Path], destination: Destination, calling_ae: str) -> None:
    """Store the files on a DICOM node in one association; ``RuntimeError`` unless all succeed."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=calling_ae)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"no association with {destination}")
    try:
        for path, ds in zip(paths, datasets):
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code not in (SUCCESS, 0xB000, 0xB007, 0xB006):  # success or a warning the store was kept
                raise RuntimeError(f"{destination} refused {path.name} (status {code if code is None else hex(code)})")
    finally:
        assoc.release()


def send_stow(paths: list[Path], destination: Destination, timeout_s: float = 60.0) -> None:
    """STOW-RS the files to ``<url>/studies`` in one multipart request; ``RuntimeError`` on failure."""
    import urllib.error
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
                    for path in paths) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        f"{destination.stow_url}/studies", data=body, method="POST",
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Accept": "application/dicom+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if response.status != 200:  # 202: some instances were not stored (PS3.18)
                raise RuntimeError(f"STOW-RS to {destination} answered {response.status}: not every instance stored")
    except (urllib.error.URLError, OSError) as error:
        raise RuntimeError(f"STOW-RS to {destination} failed: {error}") from None


def _fsync(path: Path) -> None:
    import os

    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class DicomNode:
    """The SCP, the queue and one worker thread around a ``Predictor``."""

    def __init__(self, config: ListenConfig, predictor):
        self.config = config.checked()
        self.destination = Destination.parse(config.destination)
        self.predictor = predictor
        self.spool = Path(config.spool)
        (self.spool / "incoming").mkdir(parents=True, exist_ok=True)
        (self.spool / "results").mkdir(parents=True, exist_ok=True)
        self.queue = JobQueue(self.spool / "queue.sqlite", config.max_attempts, config.backoff_s)
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None

    # receiving ---------------------------------------------------------------------------------
    def handle_store(self, event) -> int:
        from drustage.outputs.dicom import not_a_hand_radiograph

        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as error:  # a data set pynetdicom cannot decode
            log.warning("refused a store from %s: undecodable data set (%s)", event.assoc.requestor.ae_title,
                        printable(str(error))[:200])
            return CANNOT_UNDERSTAND
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if not UID_PATTERN.fullmatch(uid) or len(uid) > 64:
            log.warning("refused a store: SOP Instance UID %r is not a UID", printable(uid)[:80])
            return CANNOT_UNDERSTAND
        study = str(getattr(ds, "StudyInstanceUID", ""))
        reason = not_a_hand_radiograph(ds)
        if reason:
            if self.queue.add(uid, study, Path(), state="skipped", reason=reason):
                log.info("skipped %s: %s", uid, reason)
            return SUCCESS
        known = self.queue.job(uid)
        if known is not None and known.state != "error":
            log.info("%s is already queued: not read again", uid)
            return SUCCESS
        path = self.spool / "incoming" / f"{uid}.dcm"
        try:
            with atomic_path(path) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
                _fsync(tmp)
            _fsync(path.parent)  # the image is on disk before the store is acknowledged
        except (OSError, ValueError) as error:
            log.error("could not spool %s: %s", uid, printable(str(error))[:200])
            return OUT_OF_RESOURCES
        if known is not None:  # a resend of one that ended as an error: try it afresh
            self.queue.requeue(uid)
            log.info("%s resent after an error: queued again", uid)
            return SUCCESS
        self.queue.add(uid, study, path)
        log.info("queued %s (study %s)", uid, study)
        return SUCCESS

    # working -----------------------------------------------------------------------------------
    def process(self, job) -> None:
        """Read one queued radiograph, write its outputs, send SR and SC; records the outcome."""
        from drustage.batch import OutputOptions, predict_file

        out = self.spool / "results" / job.sop_instance_uid
        out.mkdir(parents=True, exist_ok=True)
        try:
            report = predict_file(self.predictor, job.path, "source", out, OutputOptions(dicom_out=out))
        except (ValueError, OSError) as error:  # the image itself is bad: retrying cannot help
            self.queue.failed(job.sop_instance_uid, printable(str(error)), retry=False)
            log.error("%s: %s", job.sop_instance_uid, printable(str(error)))
            return
        outputs = [out / report["files"]["structured_report"], out / report["files"]["secondary_capture"]]
        try:
            if self.destination.stow_url:
                send_stow(outputs, self.destination)
            else:
                send_cstore(outputs, self.destination, self.config.ae_title)
        except (RuntimeError, OSError, ValueError) as error:
            state = self.queue.failed(job.sop_instance_uid, printable(str(error)))
            (log.error if state == "error" else log.warning)("%s: %s (%s)", job.sop_instance_uid,
                                                             printable(str(error)), state)
            return
        self.queue.done(job.sop_instance_uid)
        log.info("%s: sent SR and SC to %s", job.sop_instance_uid, self.destination)

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.claim()
            if job is None:
                self._stop.wait(self.config.poll_s)
                continue
            try:
                self.process(job)
            except Exception as error:  # an unforeseen failure must not stop the worker: retried, then an error
                log.exception("%s: unexpected failure", job.sop_instance_uid)
                self.queue.failed(job.sop_instance_uid, f"unexpected failure: {printable(str(error))}")

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt

        recovered = self.queue.recover()
        if recovered:
            log.info("%d job(s) left running by an earlier process are pending again", recovered)
        ae = AE(ae_title=self.config.ae_title)
        ae.supported_contexts = StoragePresentationContexts
        self._server = ae.start_server((self.config.host, self.config.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self.handle_store)])
        self._worker = threading.Thread(target=self._work, name="drustage-listen-worker", daemon=True)
        self._worker.start()
        log.info("listening as %s on %s:%d; results go to %s", self.config.ae_title, self.config.host,
                 self.config.port, self.destination)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)
        self.queue.close()

"""The service's state: past predictions in SQLite and an append-only audit log.

``ResultStore`` keeps the newest ``max_results`` predictions (report, display image, crops and, for
a DICOM upload, the few source attributes its SR and SC need) so the page can open past results and
a restart keeps them; without a state folder it lives in memory.
``AuditLog`` appends one JSON line per prediction and per label save: time, client, model
fingerprint, input SHA-256 and action, never a patient name, file name or image id.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AuditLog", "ResultStore", "StoredResult"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    report TEXT NOT NULL,
    display BLOB NOT NULL,
    display_scale REAL NOT NULL,
    crops BLOB NOT NULL,
    source BLOB
)"""


@dataclass
class StoredResult:
    report: dict
    display: np.ndarray  # uint8, long side <= the service's display size
    display_scale: float  # display pixels per original pixel
    crops: dict[str, np.ndarray]
    source: bytes | None = None  # a DICOM upload's source reference (outputs.dicom.source_reference), for SR/SC
    created: float = 0.0


def _array_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _arrays(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


class ResultStore:
    def __init__(self, path: Path | None, max_results: int):
        self.max_results = max_results
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)  # a DICOM upload's patient attributes are kept here: owner only
        self._db = sqlite3.connect(":memory:" if path is None else path, check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA secure_delete=ON")  # results past the retention limit leave no trace
        if path is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)

    def put(self, result_id: str, stored: StoredResult) -> None:
        """Keep a result; the oldest beyond ``max_results`` are dropped (the retention limit)."""
        row = (result_id, time.time(), json.dumps(stored.report), _array_bytes({"display": stored.display}),
               stored.display_scale, _array_bytes(stored.crops), stored.source)
        with self._lock:
            self._db.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            self._db.execute("DELETE FROM results WHERE id NOT IN "
                             "(SELECT id FROM results ORDER BY created DESC LIMIT ?)", (self.max_results,))

    def get(self, result_id: str) -> StoredResult | None:
        with self._lock:
            row = self._db.execute("SELECT report, display, display_scale, crops, source, created FROM results "
                                   "WHERE id=?", (result_id,)).fetchone()
        if row is None:
            return None
        return StoredResult(json.loads(row[0]), _arrays(row[1])["display"], row[2], _arrays(row[3]), row[4], row[5])

    def recent(self, limit: int) -> list[tuple[str, float, dict]]:
        """(id, created, report) of the newest results, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, created, report FROM results ORDER BY created DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [(row[0], row[1], json.loads(row[2])) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AuditLog:
    """Append-only JSON lines; each line is flushed to disk before the request is answered."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def record(self, action: str, client: str, model_fingerprint: str, input_sha256: str, **fields) -> None:
        if self.path is None:
            return
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "action": action, "client": client,
                 "model_fingerprint": model_fingerprint, "input_sha256": input_sha256, **fields}
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

"""The DICOM node's job queue: one row per received SOP instance, in SQLite.

A radiograph is written to the spool and queued before its C-STORE is acknowledged, so a restart
loses nothing; the SOP Instance UID is the key, so a resent image is not read twice. A job a killed
process left running is pending again at the next start. A failed job is retried after a growing
delay and ends as ``error`` with its reason after ``max_attempts``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "JobQueue", "STATES"]

STATES = ("pending", "running", "done", "error", "skipped")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    sop_instance_uid TEXT PRIMARY KEY,
    study_instance_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
)"""


@dataclass(frozen=True)
class Job:
    sop_instance_uid: str
    study_instance_uid: str
    path: Path
    state: str
    attempts: int
    reason: str


class JobQueue:
    """Thread-safe over one connection (the node's receiving and working threads share it)."""

    def __init__(self, path: str | Path, max_attempts: int = 5, backoff_s: float = 2.0):
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged image survives a power cut
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _execute(self, sql: str, parameters: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, parameters)

    def _rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:  # fetched under the lock: the connection is shared between threads
            return self._db.execute(sql, parameters).fetchall()

    def add(self, sop_instance_uid: str, study_instance_uid: str, path: Path, state: str = "pending",
            reason: str = "") -> bool:
        """Queue a received instance; False when that SOP instance is already queued (a resend)."""
        now = time.time()
        cursor = self._execute(
            "INSERT OR IGNORE INTO jobs (sop_instance_uid, study_instance_uid, path, state, reason, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)", (sop_instance_uid, study_instance_uid, str(path), state, reason, now, now))
        return cursor.rowcount == 1

    def recover(self) -> int:
        """Jobs a killed process left running are pending again; returns how many."""
        return self._execute("UPDATE jobs SET state='pending', updated=? WHERE state='running'",
                             (time.time(),)).rowcount

    def claim(self) -> Job | None:
        """The oldest pending job that is due, marked running; None when there is none."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT sop_instance_uid FROM jobs WHERE state='pending' AND next_try<=? ORDER BY created LIMIT 1",
                    (time.time(),)).fetchone()
                if row is not None:
                    self._db.execute("UPDATE jobs SET state='running', attempts=attempts+1, updated=? "
                                     "WHERE sop_instance_uid=?", (time.time(), row[0]))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return None if row is None else self.job(row[0])

    def job(self, sop_instance_uid: str) -> Job | None:
        rows = self._rows("SELECT sop_instance_uid, study_instance_uid, path, state, attempts, reason FROM jobs "
                          "WHERE sop_instance_uid=?", (sop_instance_uid,))
        return Job(*rows[0][:2], Path(rows[0][2]), *rows[0][3:]) if rows else None

    def requeue(self, sop_instance_uid: str) -> None:
        """A job that ended as an error is pending again with its attempts reset (the PACS resent it)."""
        self._execute("UPDATE jobs SET state='pending', attempts=0, next_try=0, reason='', updated=? "
                      "WHERE sop_instance_uid=?", (time.time(), sop_instance_uid))

    def done(self, sop_instance_uid: str) -> None:
        self._execute("UPDATE jobs SET state='done', reason='', updated=? WHERE sop_instance_uid=?",
                      (time.time(), sop_instance_uid))

    def failed(self, sop_instance_uid: str, reason: str, retry: bool = True) -> str:
        """Record a failure: pending again after ``backoff_s * 2**(attempts-1)`` seconds, or ``error``
        once ``max_attempts`` are spent (or ``retry`` is False). Returns the new state."""
        job = self.job(sop_instance_uid)
        final = not retry or job is None or job.attempts >= self.max_attempts
        state = "error" if final else "pending"
        delay = 0.0 if final else self.backoff_s * 2 ** (job.attempts - 1)
        self._execute("UPDATE jobs SET state=?, reason=?, next_try=?, updated=? WHERE sop_instance_uid=?",
                      (state, reason[:500], time.time() + delay, time.time(), sop_instance_uid))
        return state

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {state: 0 for state in STATES} | dict(rows)

    def jobs(self, state: str | None = None) -> list[Job]:
        sql = "SELECT sop_instance_uid, study_instance_uid, path, state, attempts, reason FROM jobs"
        rows = self._rows(sql + (" WHERE state=?" if state else "") + " ORDER BY created", (state,) if state else ())
        return [Job(r[0], r[1], Path(r[2]), r[3], r[4], r[5]) for r in rows]

"""Screening records: SQLite (WAL) plus the photograph and the result screen of each screening, crash-safe.

Saving one screening: write the photograph (JPEG) and the result screen (PNG) atomically (temporary file, fsync,
``os.replace``), then insert the record and its audit entry in ONE transaction. A crash before the commit leaves
image files without a record; :meth:`RecordStore.recover` (run on every open) moves them to ``orphans/`` and
deletes stray temporary files, so nothing is half-written, duplicated or silently lost. Records and the audit
trail are append-only (SQLite triggers refuse UPDATE and DELETE).

    store = RecordStore("demo_output/records")
    session = store.start_session(operator="nurse-1", model_id=model.contract.id)
    rid = store.save(session, "P001", "right", 1, result, photo_rgb, screen_rgb, operator="nurse-1")
    store.export_session(session, "demo_output/session.csv")   # and .json
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.atomic import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, TMP_SUFFIX, fsync_dir, make_dirs, write_atomic
from device.errors import HardwareError, ScreeningError, StorageError, not_saved_message, storage_fault
from device.result import ScreeningResult, Verdict

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, started_at TEXT NOT NULL, operator TEXT NOT NULL, model_id TEXT NOT NULL, unit TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS screenings (
  id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES sessions(id), patient_id TEXT NOT NULL,
  eye TEXT NOT NULL, attempt INTEGER NOT NULL, operator TEXT NOT NULL, captured_at TEXT NOT NULL, source TEXT,
  model_id TEXT NOT NULL, verdict TEXT NOT NULL, final INTEGER NOT NULL, probability REAL, gradable INTEGER NOT NULL,
  reasons TEXT NOT NULL, regions TEXT NOT NULL, timings TEXT NOT NULL, metrics TEXT NOT NULL,
  photo_path TEXT NOT NULL, photo_sha256 TEXT NOT NULL, screen_path TEXT NOT NULL, screen_sha256 TEXT NOT NULL,
  created_at TEXT NOT NULL, model_sha256 TEXT);
-- The console's patient page and day list (device/console/store.py) look screenings up by patient and by time.
CREATE INDEX IF NOT EXISTS screenings_by_patient ON screenings(patient_id);
CREATE INDEX IF NOT EXISTS screenings_by_time ON screenings(captured_at);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
  model_id TEXT, session_id TEXT, record_id TEXT, detail TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS screenings_append_only_u BEFORE UPDATE ON screenings
  BEGIN SELECT RAISE(ABORT, 'screening records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS screenings_append_only_d BEFORE DELETE ON screenings
  BEGIN SELECT RAISE(ABORT, 'screening records are append-only'); END;
"""
DB_FILE = "records.sqlite"
IMAGES_DIR = "images"
ORPHANS_DIR = "orphans"
# Held (flock, exclusive) by the one process that owns a records folder (the kiosk or demo): it alone may write
# photographs and run crash recovery. The kernel drops the lock when that process dies, even by SIGKILL.
LOCK_FILE = ".owner.lock"
JPEG_QUALITY = 95  # the photograph as kept in the record: visually lossless, ~10x smaller than PNG
# Columns added after the first release: (name, SQL type), added to an older database when it is opened.
ADDED_COLUMNS = (("model_sha256", "TEXT"),)
EXPORT_COLUMNS = ("id", "session_id", "patient_id", "eye", "attempt", "operator", "captured_at", "source", "model_id",
                  "model_sha256",
                  "verdict", "final", "probability", "gradable", "reasons", "regions", "photo_path", "screen_path",
                  "patient_verdict")


class RecordsConfig(BaseModel):
    """Where and how screenings are recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    folder: str = Field("demo_output/records", description="records folder (database + images); created")
    fsync: bool = Field(True, description="flush every record to disk before reporting it saved (power-loss safe)")
    min_free_mb: int = Field(200, ge=0, le=1_000_000, description="refuse to screen below this free space, MiB")


SCREENING_COLUMNS = (
    "id", "session_id", "patient_id", "eye", "attempt", "operator", "captured_at", "source", "model_id", "verdict",
    "final", "probability", "gradable", "reasons", "regions", "timings", "metrics", "photo_path", "photo_sha256",
    "screen_path", "screen_sha256", "created_at", "model_sha256")
JSON_COLUMNS = ("reasons", "regions", "timings", "metrics")  # screenings columns stored as JSON text
# A CSV cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection"); tab and CR too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def decode_row(row: sqlite3.Row | dict) -> dict:
    """One ``screenings`` row as a dict with its JSON columns decoded."""
    r = dict(row)
    for key in JSON_COLUMNS:
        if key in r:
            r[key] = json.loads(r[key])
    return r


def visit_verdicts(rows: list[dict]) -> dict[tuple[str, str], str]:
    """Per visit (session id, patient id): 'referable' if any eye's last result refers (referable, or ungradable
    after the last retake), 'incomplete' while an eye's last result is an ungradable photograph awaiting a retake,
    else 'non_referable'.

    Args:
        rows: screenings (with ``session_id``, ``patient_id``, ``eye``, ``verdict``, ``final``), oldest first.
    """
    last: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        last[(r["session_id"], r["patient_id"], r["eye"])] = r
    out: dict[tuple[str, str], str] = {}
    for (sid, pid, _), r in last.items():
        refer = r["verdict"] == Verdict.REFERABLE.value or (r["verdict"] == "ungradable" and r["final"])
        state = "referable" if refer else ("incomplete" if r["verdict"] == "ungradable" else "non_referable")
        prev = out.get((sid, pid), "non_referable")
        out[(sid, pid)] = "referable" if "referable" in (prev, state) else (
            "incomplete" if "incomplete" in (prev, state) else "non_referable")
    return out


def csv_cell(value: object) -> object:
    """A value made safe for a spreadsheet: text starting with ``= + - @`` (or tab, CR) gets a leading ``'`` so
    it is shown as text, never run as a formula. Numbers pass unchanged (a negative number is not text)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def screenings_csv(rows: list[dict], verdicts: dict[tuple[str, str], str]) -> str:
    """CSV text, one row per screening (:data:`EXPORT_COLUMNS`), every cell passed through :func:`csv_cell`.

    Args:
        rows: decoded screenings (:func:`decode_row`).
        verdicts: :func:`visit_verdicts` of those rows.
    """
    buf = StringIO()
    writer = csv.writer(buf)
    writer.writerow(EXPORT_COLUMNS)
    for r in rows:
        r = {**r, "patient_verdict": verdicts.get((r["session_id"], r["patient_id"]), ""),
             "reasons": "; ".join(r["reasons"]), "regions": json.dumps(r["regions"])}
        writer.writerow([csv_cell(r.get(c, "")) for c in EXPORT_COLUMNS])  # older records lack added columns
    return buf.getvalue()


@contextmanager
def writing(what: str, then: str = "press the button to go on") -> Iterator[None]:
    """Turn an OSError or sqlite3 error raised while recording into a :class:`StorageError` whose message names
    the fault (full disk, locked database, ...) and what to do (:func:`device.errors.not_saved_message`)."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(not_saved_message(exc, what, then), storage_fault(exc)) from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RecordStore:
    """The unit's append-only record of sessions, screenings and audit events."""

    def __init__(self, folder: str | Path, fsync: bool = True, recover: bool = True) -> None:
        """Open (and create) a records folder.

        Args:
            folder: the records folder.
            fsync: flush every record to disk before reporting it saved.
            recover: own the folder: take its exclusive lock (:data:`LOCK_FILE`), then run :meth:`recover`. Only the
                kiosk (or demo) does: recovery moves image files that have no record yet, so a second process
                (``selftest`` adding an audit entry while the kiosk runs, the console) passes False, and a second
                owner is refused while the first one lives.

        Raises:
            HardwareError: the folder cannot be written, or another process owns it (one sentence).
        """
        self.folder = Path(folder)
        self.fsync = fsync
        self.db = None
        self._lock_fd: int | None = None
        try:
            make_dirs(self.folder, PRIVATE_DIR_MODE)  # patient data: the unit's user only, whatever the umask
            make_dirs(self.folder / IMAGES_DIR, PRIVATE_DIR_MODE)
            if recover:
                self._lock()
            self._private_database()
            self.db = sqlite3.connect(str(self.folder / DB_FILE), isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self.db.executescript(SCHEMA)
            have = {row[1] for row in self.db.execute("PRAGMA table_info(screenings)")}
            for name, kind in ADDED_COLUMNS:
                if name not in have:
                    self.db.execute(f"ALTER TABLE screenings ADD COLUMN {name} {kind}")
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise HardwareError(f"The records folder {self.folder} cannot be written ({exc}): check the disk and "
                                "its permissions.") from exc
        self.db.row_factory = sqlite3.Row
        try:
            self.recovered = self.recover() if recover else 0
        except ScreeningError:
            self.close()
            raise

    def _private_database(self) -> None:
        """Create the database file 0600 before SQLite does (its -wal and -shm files copy the database's mode), and
        tighten the files of an older records folder."""
        db = self.folder / DB_FILE
        os.close(os.open(db, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
        for path in (db, db.with_name(DB_FILE + "-wal"), db.with_name(DB_FILE + "-shm")):
            try:
                if path.exists() and path.stat().st_mode & 0o077:
                    os.chmod(path, PRIVATE_FILE_MODE)
            except OSError:
                pass  # FAT, or a file of another user (SQLite then says so)

    def _lock(self) -> None:
        """Take the folder's owner lock, or raise HardwareError naming the process that holds it."""
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise HardwareError(f"The records folder {self.folder} is in use by another unit process (pid "
                                    f"{holder}): stop that one first, or give this one its own records folder.") \
                    from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    @classmethod
    def from_config(cls, cfg: RecordsConfig, recover: bool = True) -> RecordStore:
        """Open the store a config describes (``recover=False``: as a second process beside the kiosk)."""
        return cls(cfg.folder, fsync=cfg.fsync, recover=recover)

    def close(self) -> None:
        """Close the database and release the folder's owner lock (idempotent)."""
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- writing ------------------------------------------------------------------------------------------------
    def audit(self, who: str, action: str, detail: dict | None = None, model_id: str | None = None,
              session_id: str | None = None, record_id: str | None = None) -> None:
        """Append one audit event (who, when, which model, what happened).

        Raises:
            StorageError: it could not be written (full disk, locked database; the message says which).
        """
        with writing(f"the audit entry '{action}'"):
            self._audit(who, action, detail, model_id, session_id, record_id)

    def _audit(self, who: str, action: str, detail: dict | None, model_id: str | None, session_id: str | None,
               record_id: str | None = None) -> None:
        self.db.execute("INSERT INTO audit (at, who, action, model_id, session_id, record_id, detail) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (_now(), who, action, model_id, session_id, record_id, json.dumps(detail or {})))

    def start_session(self, operator: str, model_id: str, unit: str = "", model: dict | None = None) -> str:
        """Open a screening session; returns its id.

        Args:
            operator, model_id, unit: who screens, with which model card id, on which unit.
            model: what else the audit entry should say about the model (sha256, thresholds, self-test).
        """
        sid = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        with writing("the new session", "start the unit again"), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)", (sid, _now(), operator, model_id, unit))
            self._audit(operator, "session_started", {"unit": unit, **({"model": model} if model else {})},
                        model_id, sid)
        return sid

    def save(self, session_id: str, patient_id: str, eye: str, attempt: int, result: ScreeningResult,
             photo: np.ndarray, screen: np.ndarray, operator: str, source: str = "",
             captured_at: str | None = None, model_sha256: str | None = None) -> str:
        """Record one screening: images first (atomic), then the record and its audit entry in one transaction.

        Args:
            session_id: from :meth:`start_session`.
            patient_id, eye, attempt: who and which eye; attempt 1 is the first photograph, >1 are retakes.
            result: the screening result.
            photo: the original RGB photograph; screen: the rendered result screen (RGB).
            operator: who screened.
            source: where the photograph came from (camera, file).
            captured_at: ISO time of capture (default now).
            model_sha256: sha256 of the model file that screened it (a modified model is then told apart from the
                official one with the same card id); None for a fake model.

        Returns:
            The record id.
        """
        rid = uuid.uuid4().hex
        rel = Path(IMAGES_DIR) / session_id
        # cvtColor swaps channels ~8x faster than a contiguous copy of a reversed numpy view.
        ok1, jpg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        ok2, png = cv2.imencode(".png", cv2.cvtColor(screen, cv2.COLOR_RGB2BGR))
        if not (ok1 and ok2):  # pragma: no cover - OpenCV cannot fail on valid uint8 images
            raise ValueError("The photograph or screen could not be encoded.")
        jpg_b, png_b = jpg.tobytes(), png.tobytes()
        photo_rel, screen_rel = rel / f"{rid}_photo.jpg", rel / f"{rid}_screen.png"
        what = "this photograph's record"
        try:
            with writing(what):
                write_atomic(self.folder / photo_rel, jpg_b, self.fsync, sync_folder=False, private=True)
                write_atomic(self.folder / screen_rel, png_b, self.fsync, sync_folder=False, private=True)
                if self.fsync:  # both renames durable before the record that points at them is committed
                    fsync_dir(self.folder / rel)
        except StorageError:
            self._discard(photo_rel, screen_rel)
            raise
        q = result.quality
        row = (rid, session_id, patient_id, eye, int(attempt), operator, captured_at or _now(), source,
               result.model_id, result.verdict.value, int(result.final), result.probability, int(q.gradable),
               json.dumps(list(q.reasons)), json.dumps([r.to_json_dict() for r in result.regions]),
               json.dumps(dict(result.timings_ms)), json.dumps(dict(q.metrics)),
               str(photo_rel), _sha256(jpg_b), str(screen_rel), _sha256(png_b), _now(), model_sha256)
        try:
            with writing(what), self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(f"INSERT INTO screenings ({', '.join(SCREENING_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(row))})", row)
                self._audit(operator, "screened", {"patient_id": patient_id, "eye": eye, "attempt": attempt,
                                                   "verdict": result.verdict.value, "probability": result.probability,
                                                   "final": result.final, "model_sha256": model_sha256},
                            result.model_id, session_id, rid)
        except StorageError:
            self._discard(photo_rel, screen_rel)  # no record points at them: nothing is left to sweep later
            raise
        return rid

    def _discard(self, *rel_paths: Path) -> None:
        """Delete the image files of a record that was not committed (and their temporary files)."""
        for rel in rel_paths:
            path = self.folder / rel
            for p in (path, path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass  # recover() sweeps it at the next start

    # -- recovery -----------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Clean up after a crash: delete temporary files, move image files with no record to ``orphans/``.

        Returns:
            How many files were moved or deleted (also written to the audit trail when > 0).

        Raises:
            HardwareError: another process owns the folder: its files without a record may be in flight, so
                nothing is touched.
        """
        if self._lock_fd is None:
            self._lock()  # only the owner may decide that a file is abandoned
        images = self.folder / IMAGES_DIR
        known = {r[0] for r in self.db.execute("SELECT photo_path FROM screenings UNION "
                                               "SELECT screen_path FROM screenings")}
        touched = 0
        for path in images.rglob("*"):
            if not path.is_file():
                continue
            if path.name.endswith(TMP_SUFFIX):
                path.unlink(missing_ok=True)
                touched += 1
            elif str(path.relative_to(self.folder)) not in known:
                dest = self.folder / ORPHANS_DIR / path.relative_to(images)
                make_dirs(dest.parent, PRIVATE_DIR_MODE)
                shutil.move(str(path), str(dest))
                touched += 1
        if touched:
            self.audit("unit", "recovered", {"files": touched})
        return touched

    # -- reading and export -------------------------------------------------------------------------------------
    def screenings(self, session_id: str | None = None) -> list[dict]:
        """All screening records (of one session), oldest first, JSON fields decoded."""
        sql, args = "SELECT * FROM screenings", ()
        if session_id:
            sql, args = sql + " WHERE session_id = ?", (session_id,)
        return [decode_row(r) for r in self.db.execute(sql + " ORDER BY rowid", args)]

    def audit_trail(self, session_id: str | None = None) -> list[dict]:
        """The audit events (of one session), in order."""
        sql, args = "SELECT * FROM audit", ()
        if session_id:
            sql, args = sql + " WHERE session_id = ?", (session_id,)
        return [dict(r) for r in self.db.execute(sql + " ORDER BY seq", args)]

    def patient_verdicts(self, session_id: str) -> dict[str, str]:
        """Per patient of one session: see :func:`visit_verdicts`."""
        return {pid: v for (_, pid), v in visit_verdicts(self.screenings(session_id)).items()}

    def export_session(self, session_id: str, path: str | Path) -> Path:
        """Export one session to CSV (one row per screening) or JSON (session, patients, screenings, audit).

        Args:
            session_id: the session.
            path: destination; ``.json`` writes JSON, anything else CSV. Written atomically.

        Returns:
            The path written.
        """
        path = Path(path)
        rows = self.screenings(session_id)
        verdicts = self.patient_verdicts(session_id)
        if path.suffix.lower() == ".json":
            session = dict(self.db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone() or {})
            doc = {"session": session, "patients": verdicts, "screenings": rows,
                   "audit": self.audit_trail(session_id)}
            data = json.dumps(doc, indent=1).encode()
        else:
            by_visit = {(session_id, pid): v for pid, v in verdicts.items()}
            data = screenings_csv(rows, by_visit).encode()
        with writing(f"the session export {path.name}"):
            return write_atomic(path, data, self.fsync, private=True)

    def free_mb(self) -> float:
        """Free space on the records disk, MiB."""
        st = os.statvfs(self.folder)
        return st.f_bavail * st.f_frsize / 2 ** 20

"""Read-only access to the unit's records for the console: one short-lived SQLite connection per request.

The connection is opened with ``mode=ro`` (SQLite refuses every write through it) on the kiosk's WAL database. In
WAL mode a reader never blocks the writer and the writer never blocks a reader; the only thing a reader can do to
the writer is hold a snapshot open so a checkpoint cannot finish, so each request opens, reads and closes. Every
query is parameterised; the patient search escapes LIKE's wildcards.

    with RecordReader("demo_output/records") as reader:
        visits = reader.visits(*day_bounds(date.today()))
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from device.errors import HardwareError
from device.records import DB_FILE, decode_row, visit_verdicts

BUSY_TIMEOUT_S = 5  # a reader waits this long in the rare case SQLite reports the WAL index busy
LIST_COLUMNS = ("id", "session_id", "patient_id", "eye", "attempt", "operator", "captured_at", "verdict", "final",
                "probability", "model_id")
SEARCH_LIMIT = 200  # patients shown for one search


def _iso(moment: datetime) -> str:
    """The records' timestamp format (UTC, milliseconds), so range bounds compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def day_bounds(day: date, last: date | None = None) -> tuple[str, str]:
    """UTC bounds [start, end) of the local calendar days ``day`` .. ``last`` (inclusive; default one day)."""
    tz = datetime.now().astimezone().tzinfo
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine((last or day) + timedelta(days=1), time.min, tz)
    return _iso(start), _iso(end)


def local_time(iso: str) -> datetime:
    """A records timestamp in the unit's local time zone."""
    return datetime.fromisoformat(iso).astimezone()


@dataclass
class Visit:
    """One patient at one session: the last photograph of each eye decides, as on the unit."""

    session_id: str
    patient_id: str
    operator: str
    first_at: str
    last_at: str
    verdict: str = "non_referable"  # referable / non_referable / incomplete (records.visit_verdicts)
    eyes: dict[str, dict] = field(default_factory=dict)  # eye -> its last screening
    photos: int = 0


def group_visits(rows: list[dict]) -> list[Visit]:
    """Group screenings (oldest first) into visits, newest visit first."""
    visits: dict[tuple[str, str], Visit] = {}
    for r in rows:
        key = (r["session_id"], r["patient_id"])
        v = visits.get(key)
        if v is None:
            v = visits[key] = Visit(r["session_id"], r["patient_id"], r["operator"], r["captured_at"],
                                    r["captured_at"])
        v.last_at = max(v.last_at, r["captured_at"])
        v.eyes[r["eye"]] = r
        v.photos += 1
    for key, verdict in visit_verdicts(rows).items():
        visits[key].verdict = verdict
    return sorted(visits.values(), key=lambda v: v.last_at, reverse=True)


class RecordReader:
    """A read-only view of one records folder (``records.sqlite`` + ``images/``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / DB_FILE
        if not path.is_file():
            raise HardwareError(f"There is no records database at {path}: check --records, or screen a patient "
                                "(or run `python -m device demo`) first.")
        try:
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                      check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("SELECT 1 FROM screenings LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise HardwareError(f"The records database {path} cannot be read ({exc}): check the file and its "
                                "permissions.") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- screenings -------------------------------------------------------------------------------------------------
    def _rows(self, where: str, args: tuple, columns: tuple[str, ...] | None = None) -> list[dict]:
        cols = ", ".join(columns) if columns else "*"
        cur = self.db.execute(f"SELECT {cols} FROM screenings WHERE {where} ORDER BY captured_at, rowid", args)
        return [decode_row(r) for r in cur]

    def between(self, start: str, end: str, full: bool = False) -> list[dict]:
        """Screenings captured in [start, end) (UTC ISO), oldest first; ``full`` = every column, decoded."""
        return self._rows("captured_at >= ? AND captured_at < ?", (start, end), None if full else LIST_COLUMNS)

    def visits(self, start: str, end: str) -> list[Visit]:
        """The visits with a photograph in [start, end), newest first."""
        return group_visits(self.between(start, end))

    def patient(self, patient_id: str) -> list[dict]:
        """Every screening of one patient id, oldest first, decoded."""
        return self._rows("patient_id = ?", (patient_id,))

    def record(self, record_id: str) -> dict | None:
        """One screening by its record id, or None."""
        rows = self._rows("id = ?", (record_id,))
        return rows[0] if rows else None

    def search(self, text: str, limit: int = SEARCH_LIMIT) -> list[dict]:
        """Patients whose id contains ``text`` (case-insensitive), most recently seen first.

        Returns:
            ``{"patient_id", "visits", "photos", "last_at"}`` per patient, at most ``limit``.
        """
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cur = self.db.execute(
            "SELECT patient_id, COUNT(DISTINCT session_id) AS visits, COUNT(*) AS photos, MAX(captured_at) AS last_at "
            "FROM screenings WHERE patient_id LIKE ? ESCAPE '\\' GROUP BY patient_id ORDER BY last_at DESC LIMIT ?",
            (pattern, limit))
        return [dict(r) for r in cur]

    def operators(self, start: str, end: str) -> list[str]:
        """The operators who screened in [start, end), sorted."""
        cur = self.db.execute("SELECT DISTINCT operator FROM screenings WHERE captured_at >= ? AND captured_at < ? "
                              "ORDER BY operator", (start, end))
        return [r[0] for r in cur]

    def count(self) -> int:
        """How many screenings there are."""
        return int(self.db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0])

    # -- sessions and audit -----------------------------------------------------------------------------------------
    def session_models(self, session_ids: list[str]) -> dict[str, dict]:
        """Per session: what its ``session_started`` audit entry says about the model (sha256, thresholds)."""
        if not session_ids:
            return {}
        marks = ", ".join("?" * len(session_ids))
        cur = self.db.execute(f"SELECT session_id, detail FROM audit WHERE action = 'session_started' AND "
                              f"session_id IN ({marks})", tuple(session_ids))
        return {r["session_id"]: json.loads(r["detail"]).get("model", {}) for r in cur}

    def audit(self, limit: int = 50, offset: int = 0, actions: tuple[str, ...] = ()) -> list[dict]:
        """Audit events, newest first (optionally only some actions), ``detail`` decoded."""
        where, args = "", ()
        if actions:
            where, args = f"WHERE action IN ({', '.join('?' * len(actions))})", tuple(actions)
        cur = self.db.execute(f"SELECT * FROM audit {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                              (*args, limit, offset))
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in cur]

    def audit_count(self) -> int:
        """How many audit events there are."""
        return int(self.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    def last_event(self, action: str, headline: str | None = None) -> dict | None:
        """The newest audit event of one action (an ``error`` with this headline), ``detail`` decoded, or None."""
        sql, args = "SELECT * FROM audit WHERE action = ?", (action,)
        if headline is not None:
            sql, args = sql + " AND json_extract(detail, '$.headline') = ?", (action, headline)
        row = self.db.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        return None if row is None else {**dict(row), "detail": json.loads(row["detail"])}

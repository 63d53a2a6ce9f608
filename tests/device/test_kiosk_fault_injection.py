"""Fault injection end to end (issue 16 "Done when"): the kiosk is driven through a disk that fills and frees (the
image files and SQLite's own pages), a database that another program locks and unlocks, and a camera that
disappears and comes back. Afterwards the database passes its integrity check, every record's photograph and
screen are present with their recorded sha256, no file is orphaned or left half-written, each eye is recorded
once in order, and the kiosk screens again."""

from __future__ import annotations

import errno
import hashlib
import sqlite3

import device.atomic
from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import DB_FILE, IMAGES_DIR, ORPHANS_DIR, RecordStore
from firmware_bridge.fake import FakeLink


class Faults:
    """Switchable faults: the image writes (os.write ENOSPC), the database's pages (SQLite max_page_count: a
    genuine SQLITE_FULL), another connection holding the write lock, and the camera cable."""

    def __init__(self, store, camera, monkeypatch):
        self.store, self.camera = store, camera
        self.images_full = False
        self.locker: sqlite3.Connection | None = None
        real_write = device.atomic.os.write

        def write(fd, data):
            if self.images_full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(device.atomic.os, "write", write)
        store.db.execute("PRAGMA busy_timeout = 50")  # a locked database is noticed at once, not after 10 s

    def disk(self, full: bool) -> None:
        self.images_full = full
        db = self.store.db
        if not full:
            db.execute("PRAGMA max_page_count = 1000000000")
            return
        db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
        while True:  # use up the last page too: from now on every write gets SQLITE_FULL, as on a full card
            try:
                db.execute("INSERT INTO audit (at, who, action, detail) VALUES ('-', 'test', 'filler', ?)",
                           ("x" * 100,))
            except sqlite3.OperationalError as exc:
                assert "database or disk is full" in str(exc)
                break

    def lock(self, locked: bool) -> None:
        if locked:
            self.locker = sqlite3.connect(self.store.folder / DB_FILE, isolation_level=None)
            self.locker.execute("BEGIN IMMEDIATE")  # e.g. a backup tool holding the write lock
        else:
            self.locker.execute("ROLLBACK")
            self.locker.close()
            self.locker = None


def test_the_kiosk_survives_a_full_disk_a_locked_database_and_a_lost_camera(tmp_path, monkeypatch):
    cfg = parse_config({"quality": {"max_retakes": 1},
                        "records": {"folder": str(tmp_path / "rec"), "fsync": True, "min_free_mb": 0},
                        "kiosk": {"trigger": "button", "poll_interval_s": 0.0}})
    camera = FakeCamera(frames=[draw_fundus(i, 320, 240) for i in range(6)])
    store = RecordStore(cfg.records.folder, fsync=True)
    k = Kiosk(cfg, camera, FakeModel(size=64, probability=0.2), FakeDisplay(FakeDisplayConfig(width=320, height=192)),
              FakeLink(), store)
    faults = Faults(store, camera, monkeypatch)
    expected: list[tuple[str, str]] = []  # (patient, eye) of every screening that was reported saved

    def capture(saved: bool) -> None:
        before = (k.patient_id, k.eye)
        result = k.screen_once()
        assert (result is not None) == saved, k.summary.errors[-1:]
        if saved:
            expected.append(before)
        else:
            assert (k.patient_id, k.eye) == before  # nothing moved on: the same eye is taken again

    capture(True)                                    # P0001 right
    faults.disk(True)
    capture(False)                                   # the image write fails
    assert k.summary.errors[-1].startswith("NOT SAVED — the unit's disk is full")
    faults.images_full = False                       # room for the images, none for the database
    capture(False)
    assert not [p for p in (store.folder / IMAGES_DIR).rglob("*") if p.is_file() and "P0001" in p.name]
    assert k.summary.errors[-1].startswith("NOT SAVED — the unit's disk is full")
    faults.disk(False)
    capture(True)                                    # P0001 left -> the patient is closed
    faults.lock(True)
    capture(False)
    assert k.summary.errors[-1].startswith("NOT SAVED — the records database is locked by another program")
    faults.lock(False)
    capture(True)                                    # P0002 right
    camera.unplug()
    capture(False)
    capture(False)
    camera.plug()
    capture(True)                                    # P0002 left -> closed; its patient_done audit is written
    faults.disk(True)
    capture(False)
    faults.disk(False)
    capture(True)                                    # P0003 right: screening again
    faults.disk(True)
    k._finish()                                      # the session ends on a full disk (P0003 closed with one eye)
    assert k.summary.errors[-1].startswith("NOT SAVED — the unit's disk is full: the audit entry 'session_ended'")
    faults.disk(False)
    capture(True)                                    # and after it freed, the kiosk still screens (P0004 right)

    db = store.db
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = store.screenings()
    assert [(r["patient_id"], r["eye"]) for r in rows] == expected == [
        ("P0001", "right"), ("P0001", "left"), ("P0002", "right"), ("P0002", "left"), ("P0003", "right"),
        ("P0004", "right")]
    recorded = set()
    for r in rows:
        for key in ("photo", "screen"):
            path = store.folder / r[f"{key}_path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == r[f"{key}_sha256"]
            recorded.add(path)
    on_disk = {p for p in (store.folder / IMAGES_DIR).rglob("*") if p.is_file()}
    assert on_disk == recorded  # no orphaned photograph and no temporary file
    assert not (store.folder / ORPHANS_DIR).exists()
    actions = [a["action"] for a in store.audit_trail()]
    assert actions.count("screened") == 6 and actions.count("patient_done") == 2  # P0003's: the disk was full
    assert any(e.startswith("Patient P0003 is non-referable (each eye's record is saved), but the end of the visit "
                            "was not: NOT SAVED — the unit's disk is full") for e in k.summary.errors)
    store.close()
    reopened = RecordStore(cfg.records.folder, fsync=False)  # crash recovery finds nothing to clean
    assert reopened.recovered == 0
    reopened.close()

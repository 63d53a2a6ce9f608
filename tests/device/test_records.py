"""Records: SQLite WAL + atomic images, append-only audit trail, crash recovery, CSV/JSON export."""

from __future__ import annotations

import csv
import json
import sqlite3

import cv2
import numpy as np
import pytest

from device.camera import draw_fundus
from device.model import FakeModel
from device.pipeline import screen_frame
from device.quality import QualityGate
from device.records import RecordStore


@pytest.fixture(scope="module")
def results():
    photo = draw_fundus(11, 320, 240)
    gate = QualityGate()
    ok = screen_frame(photo, FakeModel(size=64, probability=0.2), gate)
    bad = screen_frame(photo, FakeModel(size=64, probability=0.8), gate)
    ungradable = screen_frame((photo * 0.1).astype(np.uint8), FakeModel(size=64), gate)
    return photo, ok, bad, ungradable


def test_save_writes_images_record_and_audit(tmp_path, results):
    photo, ok, _, _ = results
    store = RecordStore(tmp_path)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sid = store.start_session("nurse-a", ok.model_id, "unit-1")
    screen = np.full((48, 80, 3), 7, np.uint8)
    rid = store.save(sid, "P0001", "right", 1, ok, photo, screen, "nurse-a", "fake:0")
    (row,) = store.screenings(sid)
    assert row["id"] == rid and row["verdict"] == "non_referable" and row["operator"] == "nurse-a"
    assert row["timings"].keys() >= {"preprocess", "inference"} and row["metrics"]["coverage"] > 0.9
    back = cv2.imread(str(tmp_path / row["screen_path"]))
    assert np.array_equal(back[..., ::-1], screen)
    photo_back = cv2.imread(str(tmp_path / row["photo_path"]))[..., ::-1]
    assert np.abs(photo_back.astype(int) - photo).mean() < 3  # JPEG q95
    actions = [(a["who"], a["action"], a["model_id"]) for a in store.audit_trail(sid)]
    assert actions == [("nurse-a", "session_started", ok.model_id), ("nurse-a", "screened", ok.model_id)]
    assert json.loads(store.audit_trail(sid)[1]["detail"])["verdict"] == "non_referable"


def test_records_and_audit_are_append_only(tmp_path, results):
    photo, ok, _, _ = results
    store = RecordStore(tmp_path)
    sid = store.start_session("n", "m")
    store.save(sid, "P1", "left", 1, ok, photo, photo, "n")
    for sql in ("UPDATE screenings SET verdict = 'referable'", "DELETE FROM screenings",
                "UPDATE audit SET who = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute(sql)
    assert store.screenings(sid)[0]["verdict"] == "non_referable"


def test_patient_verdicts_and_export(tmp_path, results):
    photo, ok, bad, ungradable = results
    store = RecordStore(tmp_path / "rec")
    sid = store.start_session("n", "m")
    store.save(sid, "P1", "right", 1, ok, photo, photo, "n")
    store.save(sid, "P1", "left", 1, ok, photo, photo, "n")
    store.save(sid, "P2", "right", 1, ok, photo, photo, "n")
    store.save(sid, "P2", "left", 1, bad, photo, photo, "n")
    store.save(sid, "P3", "right", 1, ungradable.with_final(False), photo, photo, "n")
    store.save(sid, "P3", "right", 2, ungradable.with_final(True), photo, photo, "n")
    store.save(sid, "P3", "left", 1, ok, photo, photo, "n")
    store.save(sid, "P4", "right", 1, ungradable.with_final(False), photo, photo, "n")
    assert store.patient_verdicts(sid) == {"P1": "non_referable", "P2": "referable", "P3": "referable",
                                           "P4": "incomplete"}
    csv_path = store.export_session(sid, tmp_path / "out" / "s.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 8 and rows[3]["verdict"] == "referable" and rows[3]["patient_verdict"] == "referable"
    assert rows[4]["reasons"].startswith("too dark") and rows[5]["final"] == "1"
    doc = json.loads(store.export_session(sid, tmp_path / "out" / "s.json").read_text())
    assert doc["session"]["id"] == sid and doc["patients"]["P3"] == "referable"
    assert len(doc["screenings"]) == 8 and sum(a["action"] == "screened" for a in doc["audit"]) == 8


def test_recover_moves_orphans_and_removes_temporaries(tmp_path, results):
    photo, ok, _, _ = results
    store = RecordStore(tmp_path)
    sid = store.start_session("n", "m")
    store.save(sid, "P1", "right", 1, ok, photo, photo, "n")
    store.close()
    folder = tmp_path / "images" / sid
    (folder / "deadbeef_photo.jpg").write_bytes(b"complete image of an unsaved record")
    (folder / ".x_screen.png.123.tmp").write_bytes(b"half")
    store = RecordStore(tmp_path)
    assert store.recovered == 2
    assert not list(folder.glob("*.tmp")) and not (folder / "deadbeef_photo.jpg").exists()
    assert (tmp_path / "orphans" / sid / "deadbeef_photo.jpg").exists()
    assert len(list(folder.iterdir())) == 2  # the saved record's photo and screen stay
    assert store.audit_trail()[-1]["action"] == "recovered"


def test_unwritable_folder_is_a_hardware_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from device.errors import HardwareError

    with pytest.raises(HardwareError, match=r"cannot be written.*check the disk"):
        RecordStore(blocker / "records")


def test_console_lookups_use_indexes_not_table_scans(tmp_path):
    """The console's patient page and day list must not scan every screening of the unit's life."""
    store = RecordStore(tmp_path)
    queries = {
        "screenings_by_patient": ("SELECT * FROM screenings WHERE patient_id = ? ORDER BY captured_at, rowid", ("P1",)),
        "screenings_by_time": ("SELECT * FROM screenings WHERE captured_at >= ? AND captured_at < ? "
                               "ORDER BY captured_at, rowid", ("2026-01-01", "2026-01-02")),
    }
    for index, (sql, args) in queries.items():
        plan = " ".join(str(row[-1]) for row in store.db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert f"USING INDEX {index}" in plan, plan
    store.close()

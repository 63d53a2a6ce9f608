"""Every screening records the sha256 of the model file that screened it (issue 16 item 12): a modified model
can no longer be audited under the official card id alone. Older records folders gain the column on open."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3

from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.kiosk import Kiosk
from device.model.bundle import default_model_dir, load_bundle
from device.records import RecordStore
from firmware_bridge.fake import FakeLink


def test_each_screening_records_the_model_files_sha256(tmp_path):
    model = load_bundle(default_model_dir(), run_selftest=False)
    want = hashlib.sha256((model.folder / model.card.file).read_bytes()).hexdigest()
    cfg = parse_config({"records": {"folder": str(tmp_path / "rec"), "fsync": False, "min_free_mb": 0},
                        "kiosk": {"trigger": "auto", "poll_interval_s": 0.0}})
    store = RecordStore(cfg.records.folder, fsync=False)
    k = Kiosk(cfg, FakeCamera(frames=[draw_fundus(3, 640, 480)]), model, FakeDisplay(FakeDisplayConfig()),
              FakeLink(), store)
    assert k.screen_once() is not None
    (row,) = store.screenings()
    assert row["model_sha256"] == want and row["model_id"] == model.card.id
    screened = [json.loads(a["detail"]) for a in store.audit_trail() if a["action"] == "screened"]
    assert screened[0]["model_sha256"] == want
    path = store.export_session(k.summary.session_id, tmp_path / "s.csv")
    (exported,) = list(csv.DictReader(path.open()))
    assert exported["model_sha256"] == want


def test_an_older_records_folder_gains_the_column_and_still_exports(tmp_path):
    folder = tmp_path / "rec"
    store = RecordStore(folder, fsync=False)
    sid = store.start_session("nurse", "m")
    store.close()
    db = sqlite3.connect(folder / "records.sqlite")  # the schema before this column existed
    db.executescript("DROP TRIGGER screenings_append_only_u; DROP TRIGGER screenings_append_only_d; "
                     "ALTER TABLE screenings DROP COLUMN model_sha256;")
    db.close()
    store = RecordStore(folder, fsync=False)
    cols = {r[1] for r in store.db.execute("PRAGMA table_info(screenings)")}
    assert "model_sha256" in cols
    path = store.export_session(sid, tmp_path / "s.csv")
    assert "model_sha256" in path.read_text().splitlines()[0]
    store.close()

"""What the unit writes for the console: the model facts of a session, error headlines, the self-test in the audit
trail, and the one CSV writer (formula neutralisation) shared by the kiosk's session export and the console."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from device.app import Check, build_kiosk, record_selftest
from device.config import parse_config
from device.console.store import RecordReader
from device.console.synthetic import result
from device.records import RecordStore, csv_cell, visit_verdicts


@pytest.mark.parametrize("value, safe", [("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
                                         ("\tx", "'\tx"), ("P0001", "P0001"), (-0.5, -0.5), (3, 3), (None, None),
                                         ("", "")])
def test_csv_cell(value, safe):
    assert csv_cell(value) == safe


def test_session_export_csv_neutralises_formulas(tmp_path):
    store = RecordStore(tmp_path / "r", fsync=False)
    sid = store.start_session("=evil()", "m", "u")
    img = np.zeros((16, 16, 3), np.uint8)
    store.save(sid, "=HYPERLINK(\"http://x\")", "right", 1, result("referable", 0.9, regions=1), img, img,
               "@op", "-source")
    path = store.export_session(sid, tmp_path / "s.csv")
    store.close()
    row = next(csv.DictReader(path.open(newline="")))
    assert row["patient_id"] == "'=HYPERLINK(\"http://x\")" and row["operator"] == "'@op"
    assert row["source"] == "'-source" and float(row["probability"]) == 0.9


def test_visit_verdicts_are_per_session_and_patient():
    rows = [{"session_id": s, "patient_id": "P1", "eye": e, "verdict": v, "final": f}
            for s, e, v, f in [("a", "right", "referable", 0), ("a", "left", "non_referable", 0),
                               ("b", "right", "ungradable", 0), ("b", "left", "non_referable", 0),
                               ("c", "right", "ungradable", 1)]]
    assert visit_verdicts(rows) == {("a", "P1"): "referable", ("b", "P1"): "incomplete", ("c", "P1"): "referable"}


def test_the_kiosk_records_the_models_sha256_and_cut_off(tmp_path):
    cfg = parse_config({"camera": {"type": "fake"}, "model": {"type": "bundle"}, "display": {"type": "fake"},
                        "records": {"folder": str(tmp_path / "r"), "fsync": False}, "link": {"type": "fake"}})
    kiosk = build_kiosk(cfg)
    kiosk._error("CAMERA PROBLEM", "The camera is unplugged.")
    kiosk.store.close()
    with RecordReader(tmp_path / "r") as r:
        started = r.last_event("session_started")
        model = started["detail"]["model"]
        assert model["sha256"] == kiosk.model.card.sha256 and model["decision_threshold"] == \
            kiosk.model.card.decision_threshold
        assert r.last_event("error", "CAMERA PROBLEM")["detail"]["message"] == "The camera is unplugged."


def test_selftest_outcome_goes_to_the_audit_trail(tmp_path):
    cfg = parse_config({"records": {"folder": str(tmp_path / "r")}})
    assert record_selftest(cfg, [Check("disk", True, "ok"), Check("camera", False, "unplugged")])
    with RecordReader(tmp_path / "r") as r:
        event = r.last_event("selftest")
    assert event["detail"] == {"ok": False, "checks": [{"name": "disk", "ok": True, "message": "ok"},
                                                       {"name": "camera", "ok": False, "message": "unplugged"}]}
    assert json.dumps(event["detail"])


def test_a_second_store_without_recovery_leaves_the_kiosks_files_alone(tmp_path):
    folder = tmp_path / "r"
    RecordStore(folder, fsync=False).close()
    pending = folder / "images" / "s1" / "in-flight_photo.jpg"  # written by the kiosk, not committed yet
    pending.parent.mkdir(parents=True)
    pending.write_bytes(b"jpeg")
    RecordStore(folder, fsync=False, recover=False).close()
    assert pending.exists()

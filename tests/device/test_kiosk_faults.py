"""The kiosk under faults: a failed audit or save, a full disk, a locked database, a lasting fault with the
automatic trigger, the session end on a full disk. State stays consistent and every message names the fault."""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest

import device.app
import device.atomic
from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import RecordStore
from firmware_bridge.fake import FakeLink

GOOD = draw_fundus(21, 320, 240)
DISK_FULL = sqlite3.OperationalError("database or disk is full")
LOCKED = sqlite3.OperationalError("database is locked")


def make(tmp_path, frames=(GOOD,), trigger="auto", patients=None, **kiosk):
    cfg = parse_config({"quality": {"max_retakes": 1},
                        "records": {"folder": str(tmp_path / "rec"), "fsync": False, "min_free_mb": 0},
                        "kiosk": {"trigger": trigger, "patients": patients, "poll_interval_s": 0.0,
                                  "retry_backoff_s": 0.0, **kiosk}})
    camera = FakeCamera(frames=list(frames))
    display = FakeDisplay(FakeDisplayConfig(width=320, height=192))
    store = RecordStore(cfg.records.folder, fsync=False)
    return Kiosk(cfg, camera, FakeModel(size=64, probability=0.2), display, FakeLink(), store), camera, display, store


class FailingAudit:
    """Makes the store's database refuse writes of one audit action (or all) while ``on``."""

    def __init__(self, store, exc, action=None):
        self.store, self.exc, self.action, self.on = store, exc, action, True
        self._audit = store._audit

    def __call__(self, who, action, *args, **kwargs):
        if self.on and (self.action is None or action == self.action):
            raise self.exc
        return self._audit(who, action, *args, **kwargs)


def test_a_failed_audit_at_the_end_of_a_patient_does_not_wedge_later_captures(tmp_path, monkeypatch):
    # issue 16 item 1: before, eye_index stayed past the last eye and every capture failed with IndexError
    k, camera, display, store = make(tmp_path)
    fail = FailingAudit(store, DISK_FULL, "patient_done")
    monkeypatch.setattr(store, "_audit", fail)
    assert k.screen_once() is not None and k.screen_once() is not None  # right, left -> patient closed
    assert k.summary.errors[-1].startswith("Patient P0001 is non-referable (each eye's record is saved), but the "
                                           "end of the visit was not: NOT SAVED — the unit's disk is full")
    assert display.shown[-2:] == ["P0001_summary", "error"]
    fail.on = False  # the disk was freed
    result = k.screen_once()
    assert result is not None and (k.patient_id, k.eye) == ("P0002", "left")
    assert [(r["patient_id"], r["eye"]) for r in store.screenings()] == [
        ("P0001", "right"), ("P0001", "left"), ("P0002", "right")]
    assert not any("IndexError" in e for e in k.summary.errors)


def test_a_failed_save_keeps_the_eye_and_leaves_no_files(tmp_path, monkeypatch):
    k, camera, display, store = make(tmp_path)
    fail = FailingAudit(store, LOCKED, "screened")
    monkeypatch.setattr(store, "_audit", fail)
    assert k.screen_once() is None
    assert k.summary.errors[-1] == ("NOT SAVED — the records database is locked by another program: this "
                                    "photograph's record was not recorded; close that program (a copy or backup "
                                    "of the records folder), then press the button to go on.")
    assert (k.patient_id, k.eye, k.attempt, k.summary.screenings) == ("P0001", "right", 1, 0)
    assert not [p for p in (tmp_path / "rec" / "images").rglob("*") if p.is_file()]  # no orphan left behind
    fail.on = False
    assert k.screen_once() is not None and (k.eye, len(store.screenings())) == ("left", 1)


def test_disk_full_while_writing_an_image_is_named(tmp_path, monkeypatch):
    # issue 16 item 6: the nurse read "photograph was not screened (OperationalError)"
    k, camera, display, store = make(tmp_path)
    real = device.atomic.os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(device.atomic.os, "write", full)
    assert k.screen_once() is None
    assert k.summary.errors[-1].startswith("NOT SAVED — the unit's disk is full: this photograph's record was not "
                                           "recorded; export and remove old sessions")
    monkeypatch.setattr(device.atomic.os, "write", real)
    assert not [p for p in (tmp_path / "rec").rglob("*.tmp")]
    assert k.screen_once() is not None


def test_session_end_on_a_full_disk_is_a_sentence_not_a_traceback(tmp_path, monkeypatch):
    k, camera, display, store = make(tmp_path, patients=1, export_folder=str(tmp_path / "export"))
    fail = FailingAudit(store, DISK_FULL)
    real_write = store.export_session

    def export(*a, **kw):
        fail.on = True
        return real_write(*a, **kw)

    fail.on = False
    monkeypatch.setattr(store, "_audit", fail)
    monkeypatch.setattr(store, "export_session", export)

    def full_at_end():  # the disk fills while the second eye is screened
        fail.on = True

    real_finish = k.finish_patient
    monkeypatch.setattr(k, "finish_patient", lambda: (full_at_end(), real_finish()))
    summary = k.run()
    assert summary.screenings == 2
    assert any(e.startswith("NOT SAVED — the unit's disk is full: the audit entry 'session_ended' was not "
                            "recorded") for e in summary.errors)


def test_an_unwritable_export_folder_is_a_sentence(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    k, *_ = make(tmp_path, patients=1, export_folder=str(blocker / "sub"))
    summary = k.run()
    assert summary.exported == [] and summary.errors[-1].startswith(
        f"The session could not be exported to {blocker / 'sub'} (Not a directory): its records are kept")


def test_a_lasting_fault_with_the_automatic_trigger_stops_with_one_message(tmp_path):
    # issue 16 item 5: a missing camera wrote hundreds of error screens and audit rows a second, for ever
    k, camera, display, store = make(tmp_path, max_repeated_failures=4)
    camera.unplug()
    summary = k.run()
    assert len(camera_errors := [e for e in summary.errors if "camera" in e.lower()]) == 4, summary.errors
    assert summary.stopped.startswith("The unit stopped after 4 identical failures in a row (CAMERA PROBLEM); fix "
                                      "the problem, then start it again: ")
    assert summary.stopped.endswith(camera_errors[0])
    assert display.shown.count("error") == 4 and display.shown[-1] == "stopped"
    actions = [a["action"] for a in store.audit_trail(summary.session_id)]
    assert actions == ["session_started", "error", "error_repeated", "stopped", "session_ended"]
    repeated = [json.loads(a["detail"]) for a in store.audit_trail() if a["action"] == "error_repeated"]
    assert repeated[0]["times"] == 4


def test_backoff_doubles_between_identical_failures(tmp_path, monkeypatch):
    k, camera, display, store = make(tmp_path, max_repeated_failures=5, retry_backoff_s=0.5)
    waits = []
    monkeypatch.setattr(k, "_wait", waits.append)
    camera.unplug()
    k.run()
    assert waits == [0.5, 1.0, 2.0, 4.0]


def test_a_fault_that_clears_resets_the_count(tmp_path):
    k, camera, display, store = make(tmp_path, max_repeated_failures=3)
    camera.unplug()
    calls = {"n": 0}
    real = camera.capture

    def capture():
        calls["n"] += 1
        if calls["n"] % 3 == 0:  # every third capture works: never three identical failures in a row
            camera.plug()
            try:
                return real()
            finally:
                camera.unplug()
        return real()

    camera.capture = capture
    summary = k.run(max_screenings=4)
    assert summary.screenings == 4 and not summary.stopped


def test_many_identical_errors_write_one_audit_row_per_run(tmp_path):
    k, camera, display, store = make(tmp_path, trigger="button")
    camera.unplug()
    for _ in range(50):
        k.screen_once()
    camera.plug()
    assert k.screen_once() is not None
    actions = [a["action"] for a in store.audit_trail(k.summary.session_id)]
    assert actions == ["session_started", "error", "error_repeated", "screened"]


def test_start_up_on_a_full_disk_is_named_on_the_screen_and_the_command_line(tmp_path, monkeypatch):
    from device.app import build_kiosk, demo_config
    from device.errors import StorageError

    cfg = demo_config(tmp_path / "out")
    shown = []
    monkeypatch.setattr(device.app, "open_display",
                        lambda c: shown.append(FakeDisplay(FakeDisplayConfig())) or shown[-1])
    monkeypatch.setattr(RecordStore, "start_session", lambda *a, **k: (_ for _ in ()).throw(
        StorageError("NOT SAVED — the unit's disk is full: the new session was not recorded; export and remove old "
                     "sessions to free space, then start the unit again.", "disk_full")))
    with pytest.raises(StorageError, match="the new session was not recorded"):
        build_kiosk(cfg, "fake")
    assert shown[0].shown == ["error"]
    RecordStore(cfg.records.folder, fsync=False).close()  # the owner lock was released


def test_selftest_on_a_full_disk_names_it(tmp_path, monkeypatch):
    from device.app import demo_config, record_selftest, selftest

    cfg = demo_config(tmp_path / "out")
    monkeypatch.setattr(device.atomic.os, "write", lambda fd, data: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    checks = {c.name: c for c in selftest(cfg, "fake")}
    assert not checks["disk"].ok and checks["disk"].message == (
        "NOT SAVED — the unit's disk is full: the test file was not recorded; export and remove old sessions to free "
        "space, then run the self-test again.")
    store = RecordStore(cfg.records.folder, fsync=False)
    fail = FailingAudit(store, DISK_FULL)
    store.close()
    monkeypatch.setattr(RecordStore, "_audit", lambda self, *a, **k: fail(*a, **k))
    assert record_selftest(cfg, list(checks.values())) is False  # before: a traceback, and no check lines


def test_the_demo_on_a_full_disk_ends_with_one_message(tmp_path, monkeypatch):
    # issue 16 item 5: on a full disk the demo never ended and printed 13,000 error lines a minute
    from device.app import run_demo

    waits = []
    monkeypatch.setattr(RecordStore, "free_mb", lambda self: 1.0)
    monkeypatch.setattr(Kiosk, "_wait", lambda self, seconds: waits.append(seconds))
    summary = run_demo(tmp_path / "out", model="fake")
    assert summary.screenings == 0 and waits == [1.0, 2.0, 4.0, 8.0]
    assert summary.stopped.startswith("The unit stopped after 5 identical failures in a row (DISK FULL); fix the "
                                      "problem, then start it again: The records disk is almost full")
    store = RecordStore(tmp_path / "out" / "records", fsync=False)
    actions = [a["action"] for a in store.audit_trail(summary.session_id)]
    store.close()
    assert actions == ["session_started", "error", "error_repeated", "stopped", "session_ended"]

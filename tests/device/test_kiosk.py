"""The kiosk loop with fakes: both eyes, retakes, signals, camera unplug/replug, vanishing link, triggers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.errors import ModelError
from device.keyboard import KeyboardTrigger
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import RecordStore
from firmware_bridge.fake import FakeLink

GOOD = draw_fundus(21, 320, 240)
DARK = (GOOD * 0.1).astype(np.uint8)


def make(tmp_path, frames, probability=0.2, trigger="auto", patients=None, link=None, model=None, **kiosk):
    cfg = parse_config({"quality": {"max_retakes": 1}, "records": {"folder": str(tmp_path / "rec"), "fsync": False,
                                                                   "min_free_mb": kiosk.pop("min_free_mb", 0)},
                        "kiosk": {"trigger": trigger, "patients": patients, "poll_interval_s": 0.0, **kiosk}})
    camera = FakeCamera(frames=frames)
    display = FakeDisplay(FakeDisplayConfig(width=320, height=192))
    link = link if link is not None else FakeLink()
    store = RecordStore(cfg.records.folder, fsync=False)
    k = Kiosk(cfg, camera, model or FakeModel(size=64, probability=probability), display, link, store)
    return k, camera, display, link, store


def test_both_eyes_retake_then_ungradable_refers_the_patient(tmp_path):
    # patient 1: right ok, left ok; patient 2: right dark, dark again (-> ungradable, refer), left ok
    k, camera, display, link, store = make(tmp_path, [GOOD, GOOD, DARK, DARK, GOOD], patients=2)
    summary = k.run()
    assert summary.screenings == 5
    assert summary.patients == {"P0001": "non_referable", "P0002": "referable"}
    assert summary.verdicts == {"non_referable": 3, "ungradable": 1, "ungradable_final": 1}
    assert display.shown == ["ready", "P0001_right_1", "P0001_left_1", "P0001_summary", "P0002_right_1",
                             "P0002_right_2", "P0002_left_1", "P0002_summary"]
    assert link.flashes == [120] * 5
    # busy before every capture, then the verdict on the LEDs
    assert link.statuses == ["ready"] + ["busy", "non_referable"] * 2 + ["busy", "ungradable"] * 2 + \
        ["busy", "non_referable"]
    assert link.beeps == ["ok", "ok", "attention", "attention", "ok"]
    rows = store.screenings(summary.session_id)
    assert [(r["patient_id"], r["eye"], r["attempt"], r["verdict"], r["final"]) for r in rows] == [
        ("P0001", "right", 1, "non_referable", 0), ("P0001", "left", 1, "non_referable", 0),
        ("P0002", "right", 1, "ungradable", 0), ("P0002", "right", 2, "ungradable", 1),
        ("P0002", "left", 1, "non_referable", 0)]
    done = [json.loads(a["detail"]) for a in store.audit_trail(summary.session_id) if a["action"] == "patient_done"]
    assert done[1] == {"patient_id": "P0002", "verdict": "referable",
                       "eyes": {"right": "ungradable_final", "left": "non_referable"}}


def test_camera_unplugged_and_plugged_back(tmp_path):
    k, camera, display, link, store = make(tmp_path, [GOOD])
    assert k.screen_once() is not None
    camera.unplug()
    assert k.screen_once() is None
    assert display.shown[-1] == "error" and "check its cable" in k.summary.errors[-1]
    assert link.statuses[-1] == "error" and link.beeps[-1] == "error"
    camera.plug()
    assert k.screen_once() is not None  # reopened on the next trigger, same patient and eye moved on
    assert len(store.screenings()) == 2 and camera.opens == 2


class VanishedLink(FakeLink):
    """A microcontroller whose port disappeared: every call raises."""

    def _boom(self, *args):
        raise OSError("[Errno 5] Input/output error: '/dev/ttyACM0'")

    poll_events = show_status = beep = flash = set_illumination = _boom


def test_screening_continues_when_the_microcontroller_vanishes(tmp_path):
    k, camera, display, _, store = make(tmp_path, [GOOD], patients=1, link=VanishedLink())
    summary = k.run()
    assert summary.screenings == 2 and summary.patients == {"P0001": "non_referable"}
    assert len(store.screenings()) == 2 and summary.errors == []


def test_link_disconnect_is_audited(tmp_path):
    link = FakeLink()
    k, *_ , store = make(tmp_path, [GOOD], trigger="button", link=link)
    link.unplug()
    assert k.poll_triggers() == []
    actions = [a["action"] for a in store.audit_trail()]
    assert "link_connected" in actions and actions[-1] == "link_disconnected"


def test_button_trigger_captures_once_per_press(tmp_path):
    link = FakeLink()
    k, camera, *_ = make(tmp_path, [GOOD], trigger="button", link=link, button_debounce_ms=0)
    link.click()
    assert k.poll_triggers() == ["capture"]
    link.click()
    assert k.poll_triggers() == ["capture"]
    assert k.poll_triggers() == [] and camera.captures == []  # a press is a command, not yet a capture


def test_keyboard_trigger_enter_captures_n_skips_q_quits(tmp_path):
    r, w = os.pipe()
    os.write(w, b"\nn\nn\n\n\nq\n")  # capture, next patient, (ignored) next, capture, capture, quit
    os.close(w)
    with os.fdopen(r) as stream:
        k, camera, display, link, store = make(tmp_path, [GOOD], trigger="keyboard")
        k.keyboard = KeyboardTrigger(stream)
        summary = k.run()
    assert summary.screenings == 3
    assert summary.patients == {"P0001": "non_referable", "P0002": "non_referable"}
    assert [(r["patient_id"], r["eye"]) for r in store.screenings()] == [
        ("P0001", "right"), ("P0002", "right"), ("P0002", "left")]


class FailingModel(FakeModel):
    def __init__(self, exc):
        super().__init__(size=64)
        self.exc = exc

    def predict(self, image):
        raise self.exc


def test_model_error_shows_a_screen_and_stops(tmp_path):
    k, camera, display, *_ = make(tmp_path, [GOOD], model=FailingModel(
        ModelError("The model self-test failed on this machine; re-export it.")))
    with pytest.raises(ModelError):
        k.run()
    assert display.shown[-1] == "error" and k.summary.errors == [
        "The model self-test failed on this machine; re-export it."]


class FlakyModel(FakeModel):
    """Fails with an unexpected exception on its first prediction only."""

    def predict(self, image):
        if self.calls == 0:
            self.calls += 1
            raise RuntimeError("tensor arena exhausted")
        return super().predict(image)


def test_unexpected_error_becomes_a_sentence_and_the_loop_goes_on(tmp_path):
    k, camera, display, *_ = make(tmp_path, [GOOD], model=FlakyModel(size=64, probability=0.2))
    summary = k.run(max_screenings=2)
    assert summary.screenings == 2 and len(camera.captures) == 3
    assert summary.errors == ["Something went wrong (RuntimeError): the photograph was not screened; press the "
                              "button to try again."]
    assert display.shown[1] == "error"


def test_disk_full_refuses_to_screen(tmp_path):
    k, camera, display, *_ = make(tmp_path, [GOOD], min_free_mb=10 ** 6)
    assert k.screen_once() is None
    assert display.shown[-1] == "error" and k.summary.errors[-1].startswith("The records disk is almost full")
    assert camera.captures == []


def test_keyboard_end_of_input_stops_reading_but_not_the_unit():
    r, w = os.pipe()
    os.write(w, b"c\nbogus\n")
    os.close(w)
    with os.fdopen(r) as stream:
        kb = KeyboardTrigger(stream)
        assert kb.poll() == ["capture"]
        assert kb.poll() == []  # end of input: no 'quit', the button keeps working
        assert kb.stream is None and kb.poll() == []

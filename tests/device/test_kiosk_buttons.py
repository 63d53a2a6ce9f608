"""Button presses on the host (issue 16 item 10): debounced, at most one capture per poll, and presses queued while
a capture is processed are dropped, never replayed as captures."""

from __future__ import annotations

import threading

from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import RecordStore
from firmware_bridge.fake import FakeLink
from firmware_bridge.link import Event

GOOD = draw_fundus(21, 320, 240)


def make(tmp_path, link, camera=None, **kiosk):
    cfg = parse_config({"records": {"folder": str(tmp_path / "rec"), "fsync": False, "min_free_mb": 0},
                        "kiosk": {"trigger": "button", "poll_interval_s": 0.0, **kiosk}})
    camera = camera or FakeCamera(frames=[GOOD])
    store = RecordStore(cfg.records.folder, fsync=False)
    return Kiosk(cfg, camera, FakeModel(size=64), FakeDisplay(FakeDisplayConfig(width=320, height=192)), link,
                 store), camera, store


def presses(times):
    return [Event("button_pressed", "capture", t) for t in times]


def test_a_double_press_80_ms_apart_is_one_capture(tmp_path):
    # before: it screened both eyes and closed the patient
    link = FakeLink()
    k, camera, store = make(tmp_path, link)
    link._events.extend(presses([100.0, 100.08]))
    assert k.poll_triggers() == ["capture"]
    assert k.dropped_presses == 1


def test_presses_further_apart_than_the_debounce_each_capture(tmp_path):
    link = FakeLink()
    k, *_ = make(tmp_path, link, button_debounce_ms=300)
    for t in (100.0, 100.2, 100.5, 101.0):  # 100.2 is a bounce of 100.0
        link._events.extend(presses([t]))
        k.poll_triggers()
    assert k.dropped_presses == 1


def test_a_flood_of_presses_during_screening_is_not_replayed(tmp_path):
    # before: 1,000 presses gave 965 screenings
    link = FakeLink()

    class Camera(FakeCamera):
        def capture(self):
            frame = super().capture()
            link._events.extend(presses([200.0 + i * 0.001 for i in range(1000)]))  # pressed while screening
            return frame

    camera = Camera(frames=[GOOD])
    k, camera, store = make(tmp_path, link, camera=camera)
    link._events.extend(presses([100.0]))
    stopper = threading.Timer(1.5, k.stop)
    stopper.start()
    try:
        summary = k.run()
    finally:
        stopper.cancel()
    assert summary.screenings == 1 and len(camera.captures) == 1
    assert k.dropped_presses == 1000
    assert [(r["patient_id"], r["eye"]) for r in store.screenings()] == [("P0001", "right")]


def test_the_keyboard_is_not_debounced(tmp_path):
    import os

    from device.keyboard import KeyboardTrigger

    r, w = os.pipe()
    os.write(w, b"\n\n")
    os.close(w)
    with os.fdopen(r) as stream:
        k, camera, store = make(tmp_path, FakeLink(), trigger="keyboard")
        k.keyboard = KeyboardTrigger(stream)
        summary = k.run(max_screenings=2)
    assert summary.screenings == 2

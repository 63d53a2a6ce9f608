"""The result screen as one image: verdict colour, overlay, next action; message and patient screens."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.camera import draw_fundus
from device.model import FakeModel
from device.pipeline import screen_frame
from device.quality import QualityGate
from device.result import Verdict
from device.screen_render import COLOURS, overlay, render_message, render_patient, render_result


@pytest.fixture(scope="module")
def photo():
    return draw_fundus(5, 640, 480)


def _result(photo, prob, dark=False):
    img = (photo * 0.1).astype(np.uint8) if dark else photo
    return screen_frame(img, FakeModel(size=64, probability=prob), QualityGate())


@pytest.mark.parametrize("prob, dark, kind", [(0.9, False, "referable"), (0.1, False, "non_referable"),
                                               (0.5, True, "ungradable")])
def test_banner_colour_matches_verdict(photo, prob, dark, kind):
    r = _result(photo, prob, dark)
    assert r.verdict.value == kind
    screen = render_result(r, photo, (800, 480), "Patient P0001 · right eye")
    assert screen.shape == (480, 800, 3) and screen.dtype == np.uint8
    # the right end of the banner is plain verdict colour (the text is on the left)
    assert tuple(screen[5, 795]) == COLOURS[kind]
    # the notice strip at the bottom is black with light text
    strip = screen[-30:, :]
    assert strip.min() == 0 and strip.max() > 200


def test_overlay_draws_heat_only_when_gradable(photo):
    plain = cv2.resize(photo, (320, 240), interpolation=cv2.INTER_AREA)
    hot = overlay(photo, _result(photo, 0.9), 320, 240)
    assert hot.shape == plain.shape
    tinted = np.abs(hot.astype(int) - plain).sum(axis=2) > 30
    assert 0.001 < tinted.mean() < 0.6  # the heat map covers part of the retina, not the whole picture
    dark = (photo * 0.1).astype(np.uint8)
    ungradable = _result(photo, 0.9, dark=True)
    assert ungradable.verdict is Verdict.UNGRADABLE
    assert np.array_equal(overlay(dark, ungradable, 320, 240), cv2.resize(dark, (320, 240),
                                                                          interpolation=cv2.INTER_AREA))


def test_screen_renders_at_other_sizes(photo):
    r = _result(photo, 0.9)
    for size in ((320, 240), (1280, 720)):
        assert render_result(r, photo, size).shape == (size[1], size[0], 3)


def test_message_and_patient_screens(photo):
    msg = render_message("CAMERA PROBLEM", "The camera is not connected: plug it in.", "error", (640, 360))
    assert msg.shape == (360, 640, 3) and tuple(msg[3, 635]) == COLOURS["error"]
    r = _result(photo, 0.9)
    ok = _result(photo, 0.1)
    p = render_patient("P0007", Verdict.REFERABLE, {"right": r, "left": ok}, (800, 480))
    assert tuple(p[5, 795]) == COLOURS["referable"]

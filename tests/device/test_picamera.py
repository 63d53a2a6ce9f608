"""The Raspberry Pi camera adapter against a strict stand-in for picamera2 (tests/picamera2_standin.py).

picamera2 is not in Debian or on PyPI, so off a Pi the adapter meets this stand-in, which follows picamera2's
documented API and refuses anything else: a misnamed method, stream key or control fails these tests.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from device.camera import PiCamera, PiCameraConfig, open_camera
from device.errors import HardwareError
from tests import picamera2_standin as standin


@pytest.fixture
def rig(monkeypatch):
    """The stand-in planted as ``picamera2``, one HQ camera connected, a scene of known colour."""
    monkeypatch.setitem(sys.modules, "picamera2", standin)
    rig = standin.rig.reset()
    rig.scene = np.zeros((30, 40, 3), np.uint8)
    rig.scene[..., 0], rig.scene[..., 1], rig.scene[..., 2] = 120, 60, 20  # R > G > B, like a fundus
    rig.scene[:15, :20] = (200, 10, 10)  # a red top-left quarter shows orientation survives
    yield rig
    for sensor in rig.sensors:
        assert sensor.held_by is None, "a test left the camera acquired"


def test_still_at_configured_size_in_rgb_order(rig):
    cam = PiCamera(PiCameraConfig(width=640, height=480))
    frame = cam.capture()
    assert frame.rgb.shape == (480, 640, 3) and frame.rgb.dtype == np.uint8 and frame.source == "picamera2"
    # "RGB888" is B, G, R in memory: the adapter must hand the pipeline R, G, B
    assert tuple(frame.rgb[400, 600]) == (120, 60, 20)
    assert tuple(frame.rgb[10, 10]) == (200, 10, 10)
    (started,) = rig.started
    assert started["config"]["use_case"] == "still"  # a still configuration, not the preview one start() falls to
    assert started["config"]["main"] == {"format": "RGB888", "size": (640, 480)}
    assert "AeEnable" not in started["controls"]  # auto exposure when none is configured
    cam.close()
    assert rig.closed == 1


def test_fixed_exposure_and_gain_reach_the_sensor(rig):
    cam = open_camera({"type": "picamera2", "width": 320, "height": 240, "exposure_us": 5000,
                       "analogue_gain": 2.0})
    frame = cam.capture()
    (started,) = rig.started
    assert started["controls"] == {"ExposureTime": 5000, "AeEnable": False, "AnalogueGain": 2.0}
    # 5000 us x gain 2 is half the product auto exposure picks: the frame is half as bright
    scale = 5000 * 2.0 / standin.AUTO_EXPOSURE_PRODUCT
    assert tuple(frame.rgb[200, 300]) == tuple(int(round(v * scale)) for v in (120, 60, 20))
    cam.close()


def test_odd_size_is_rounded_to_even_as_picamera2_does(rig):
    with PiCamera(PiCameraConfig(width=641, height=481)) as cam:
        assert cam.capture().rgb.shape == (480, 640, 3)


def test_unplugged_mid_session_then_plugged_back(rig):
    cam = PiCamera(PiCameraConfig(width=320, height=240))
    cam.capture()
    rig.unplug()
    with pytest.raises(HardwareError, match=r"stopped answering: check the ribbon cable"):
        cam.capture()
    assert not cam.is_open and rig.sensors[0].held_by is None  # the failed capture released the camera ...
    with pytest.raises(HardwareError, match=r"not detected: check the ribbon cable"):
        cam.capture()  # ... and reopening an unplugged camera says so
    rig.plug()
    assert cam.capture().rgb.shape == (240, 320, 3)  # the next trigger reacquires it: no restart needed
    assert len(rig.started) == 2
    cam.close()


def test_absent_camera_index_is_one_sentence(rig):
    cam = PiCamera(PiCameraConfig(camera_index=1))
    with pytest.raises(HardwareError, match=r"^The Raspberry Pi camera is not detected: check the ribbon cable and "
                                            r"restart the unit\.$"):
        cam.capture()
    assert not cam.is_open


def test_close_is_idempotent_and_frees_the_camera(rig):
    first = PiCamera(PiCameraConfig(width=320, height=240))
    first.capture()
    first.close()
    first.close()
    with PiCamera(PiCameraConfig(width=320, height=240)) as second:  # the camera can be acquired again
        second.capture()
    assert rig.closed == 2


def test_standin_refuses_what_picamera2_does_not_offer(rig):
    """The stand-in is only worth testing against if it is strict: these are the mistakes it must catch."""
    cam = standin.Picamera2()
    try:
        with pytest.raises(AttributeError):
            cam.capture_image_array()  # no such method
        with pytest.raises(TypeError):
            cam.create_still_configuration(main_stream={"size": (640, 480)})  # no such argument
        with pytest.raises(ValueError, match="Bad key 'resolution'"):
            cam.create_still_configuration(main={"resolution": (640, 480)})
        with pytest.raises(RuntimeError, match="Bad format RGB24"):
            cam.configure(cam.create_still_configuration(main={"format": "RGB24", "size": (640, 480)}))
        odd = cam.create_still_configuration(main={"format": "RGB888", "size": (64, 48)})
        odd["main"]["size"] = (65, 48)  # create_*_configuration rounds to even; configure() insists on it
        with pytest.raises(RuntimeError, match="width and height should be even"):
            cam.configure(odd)
        cam.configure(cam.create_still_configuration(main={"format": "RGB888", "size": (64, 48)}))
        with pytest.raises(RuntimeError, match="Control Exposure is not advertised"):
            cam.set_controls({"Exposure": 5000})
        with pytest.raises(RuntimeError, match="takes int, not float"):
            cam.set_controls({"ExposureTime": 5000.0})
        with pytest.raises(RuntimeError, match="outside"):
            cam.set_controls({"AnalogueGain": 0.5})
        with pytest.raises(RuntimeError, match="before start"):
            cam.capture_array()
        with pytest.raises(RuntimeError, match="busy"):
            standin.Picamera2(0)  # one owner at a time
        # configure() replaces the controls, so controls set before it are lost (the adapter sets them after)
        cam.set_controls({"ExposureTime": 5000, "AeEnable": False})
        cam.configure(cam.create_still_configuration(main={"format": "RGB888", "size": (64, 48)}))
        cam.start()
        assert rig.started[-1]["controls"] == {}
        with pytest.raises(RuntimeError, match="stopped before configuring"):
            cam.configure("still")
        assert cam.capture_array("main").shape == (48, 64, 3)
        with pytest.raises(KeyError):
            cam.capture_array("lores")  # not configured
    finally:
        cam.close()
    with pytest.raises(RuntimeError, match="not opened"):
        cam.create_still_configuration()

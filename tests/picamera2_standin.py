"""A stand-in for ``picamera2`` (Raspberry Pi's camera library) that follows its documented API, strictly.

picamera2 comes from the Raspberry Pi archive (``sudo apt install python3-picamera2``), not from Debian or PyPI,
so the camera adapter (``device/camera/picamera.py``) cannot be tested against the real library off a Pi. This
module stands in for it, following the picamera2 manual and its source (``picamera2/picamera2.py``,
``picamera2/controls.py``) where the adapter touches it:

* ``Picamera2(camera_num=0, verbose_console=None, tuning=None)`` acquires a camera; none at that index, or one
  already held by another ``Picamera2``, raises ``RuntimeError`` as the real one does.
* ``create_still_configuration(main={}, lores=None, raw={}, transform=None, colour_space=None, buffer_count=1,
  controls={}, display=None, encode=None, queue=True)`` returns the configuration dict. A stream may only name
  ``format`` and ``size`` (``ValueError`` otherwise); the size is rounded down to even numbers; the default
  still stream is ``BGR888`` at the sensor's full resolution.
* ``configure(camera_config)`` checks the configuration (known pixel format, ``size`` a tuple of two even
  numbers, camera stopped) and, as the real one does, **replaces the controls** with the configuration's own.
* ``set_controls({...})`` takes only controls libcamera advertises, with the right types and within range
  (``ExposureTime`` microseconds as int, ``AnalogueGain`` float, ``AeEnable`` bool, ...).
* ``start()`` configures the preview mode when nothing was configured (as the real one does), then applies the
  pending controls; ``capture_array(name="main", wait=None, signal_function=None)`` returns the next frame of a
  configured stream; ``stop()`` and ``close()`` are idempotent and ``close()`` releases the camera.

Pixel layout as in the manual's appendix A: ``RGB888`` is B, G, R in memory (what OpenCV calls BGR), ``BGR888`` is
R, G, B; ``XRGB8888`` / ``XBGR8888`` add a fourth byte of 255. Frame brightness follows the controls: with
``AeEnable`` false a frame is the scene scaled by ``ExposureTime * AnalogueGain / AUTO_EXPOSURE_PRODUCT`` (the
product auto exposure would pick), so a test can see that the exposure it configured reached the sensor.

Stricter than the real library, on purpose: a call on a closed camera, ``capture_array`` before ``start`` (the
real one would wait forever) and a control of the wrong type raise ``RuntimeError`` at once. Anything not listed
above does not exist here, so a misnamed call fails with ``AttributeError`` or ``TypeError``.

The test-only rig (:data:`rig`: attach cameras, set the scene, pull a cable) is outside the ``Picamera2`` class so
that the class offers nothing picamera2 does not. Use it by planting this module as ``picamera2``::

    monkeypatch.setitem(sys.modules, "picamera2", picamera2_standin)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AUTO_EXPOSURE_PRODUCT", "Picamera2", "rig"]

AUTO_EXPOSURE_PRODUCT = 20_000.0  # exposure (us) x gain that auto exposure settles on for the rig's scene

# Pixel formats picamera2 accepts for processed streams (formats.is_RGB / is_YUV): byte order per pixel.
_RGB_ORDER = {"RGB888": (2, 1, 0), "BGR888": (0, 1, 2), "XRGB8888": (2, 1, 0), "XBGR8888": (0, 1, 2)}
_YUV = {"YUV420", "YVU420", "NV12", "NV21", "YUYV", "YVYU", "UYVY", "VYUY"}


@dataclass(frozen=True)
class _Control:
    kind: type
    low: float
    high: float


# What libcamera advertises for a Raspberry Pi HQ camera (imx477), the controls a still-capture adapter may set.
_CONTROLS = {
    "ExposureTime": _Control(int, 31, 667_244_877),
    "AnalogueGain": _Control(float, 1.0, 22.26),
    "AeEnable": _Control(bool, 0, 1),
    "AwbEnable": _Control(bool, 0, 1),
    "ExposureValue": _Control(float, -8.0, 8.0),
    "Brightness": _Control(float, -1.0, 1.0),
    "Contrast": _Control(float, 0.0, 32.0),
    "Saturation": _Control(float, 0.0, 32.0),
    "Sharpness": _Control(float, 0.0, 16.0),
    "AeMeteringMode": _Control(int, 0, 3),
    "AeExposureMode": _Control(int, 0, 3),
    "AwbMode": _Control(int, 0, 7),
    "NoiseReductionMode": _Control(int, 0, 4),
}


@dataclass
class _Sensor:
    model: str
    resolution: tuple[int, int]
    held_by: object | None = None
    attached: bool = True


@dataclass
class Rig:
    """The test's side: which cameras are connected, what they see, and what the last started camera was told."""

    sensors: list[_Sensor] = field(default_factory=list)
    scene: np.ndarray | None = None  # RGB uint8; any size (resized to the stream)
    started: list[dict] = field(default_factory=list)  # per start(): {"config": ..., "controls": ...}
    closed: int = 0

    def reset(self, cameras: int = 1, resolution: tuple[int, int] = (4056, 3040)) -> Rig:
        """``cameras`` HQ cameras connected, a mid-grey scene, no history."""
        self.sensors = [_Sensor("imx477", resolution) for _ in range(cameras)]
        self.scene = np.full((8, 8, 3), 100, np.uint8)
        self.started, self.closed = [], 0
        return self

    def unplug(self, index: int = 0) -> None:
        """Pull the ribbon cable: the camera stops delivering frames and cannot be acquired until plugged back."""
        self.sensors[index].attached = False

    def plug(self, index: int = 0) -> None:
        self.sensors[index].attached = True


rig = Rig().reset()


class Picamera2:
    """The documented subset of ``picamera2.Picamera2`` that a still-capture application uses."""

    def __init__(self, camera_num=0, verbose_console=None, tuning=None):
        if not isinstance(camera_num, int) or not 0 <= camera_num < len(rig.sensors) \
                or not rig.sensors[camera_num].attached:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        sensor = rig.sensors[camera_num]
        if sensor.held_by is not None:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        sensor.held_by = self
        self._sensor = sensor
        self.camera_idx = camera_num
        self.sensor_resolution = sensor.resolution
        self.camera_config = None
        self.started = False
        self.is_open = True
        self._controls: dict = {}

    # --- configurations ------------------------------------------------------------------------------------------
    def _opened(self) -> None:
        if not self.is_open:
            raise RuntimeError("Camera not opened")

    @staticmethod
    def _stream(defaults: dict, updates, ignore=()) -> dict | None:
        if updates is None:
            return None
        stream = dict(defaults)
        for key, value in updates.items():
            if key in ("format", "size"):
                stream[key] = value
            elif key not in ignore:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ('format', 'size')")
        width, height = stream["size"]
        stream["size"] = (width - width % 2, height - height % 2)  # align_stream(optimal=False)
        return stream

    def _configuration(self, use_case, main_defaults, main, lores, raw, transform, colour_space, buffer_count,
                       controls, display, encode, queue) -> dict:
        self._opened()
        main = self._stream(main_defaults, main)
        config = {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                  "buffer_count": buffer_count, "queue": queue, "main": main,
                  "lores": self._stream({"format": "YUV420", "size": main["size"]}, lores),
                  "raw": self._stream({"format": "SRGGB12_CSI2P", "size": main["size"]}, raw,
                                      ("bit_depth", "crop_limits", "exposure_limits", "fps", "unpacked")),
                  "controls": dict(controls)}
        for role, name in (("display", display), ("encode", encode)):
            if name is not None and config.get(name) is None:
                raise RuntimeError(f"{role.capitalize()} stream {name} was not defined")
            config[role] = name
        return config

    def create_still_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,  # noqa: B006 - picamera2's own signature
                                   buffer_count=1, controls={}, display=None, encode=None, queue=True) -> dict:  # noqa: B006
        return self._configuration("still", {"format": "BGR888", "size": self.sensor_resolution}, main, lores,
                                   raw, transform, colour_space, buffer_count, controls, display, encode, queue)

    def create_preview_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,  # noqa: B006
                                     buffer_count=4, controls={}, display="main", encode="main",  # noqa: B006
                                     queue=True) -> dict:
        return self._configuration("preview", {"format": "XBGR8888", "size": (640, 480)}, main, lores, raw,
                                   transform, colour_space, buffer_count, controls, display, encode, queue)

    @staticmethod
    def _check_stream(stream, name: str) -> None:
        if type(stream) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        for key in ("format", "size"):
            if key not in stream:
                raise RuntimeError(f"{key} not found in {name} stream")
        fmt, size = stream["format"], stream["size"]
        if type(fmt) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        if name != "raw" and fmt not in _RGB_ORDER and fmt not in _YUV and fmt != "MJPEG":
            raise RuntimeError("Bad format " + fmt + " in stream " + name)
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def configure(self, camera_config="preview") -> None:
        self._opened()
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if isinstance(camera_config, str):
            camera_config = {"preview": self.create_preview_configuration,
                             "still": self.create_still_configuration}[camera_config]()
        if not isinstance(camera_config, dict):
            raise RuntimeError(f"Cannot configure with {type(camera_config)}")
        config = dict(camera_config)
        for key in ("colour_space", "transform", "main", "lores", "raw"):
            if key not in config:
                raise RuntimeError(f"{key!r} key expected in camera configuration")
        self._check_stream(config["main"], "main")
        for name in ("lores", "raw"):
            if config[name] is not None:
                self._check_stream(config[name], name)
        self.camera_config = config
        self._controls = {}
        self.set_controls(config.get("controls", {}))  # configure() replaces the controls with the config's

    # --- controls, running ---------------------------------------------------------------------------------------
    def set_controls(self, controls) -> None:
        self._opened()
        if not isinstance(controls, dict):
            raise RuntimeError(f"Cannot update controls with {type(controls)} type")
        for name, value in controls.items():
            spec = _CONTROLS.get(name)
            if spec is None:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            # bool is an int in Python; libcamera's bool and int controls are not interchangeable
            if type(value) is not spec.kind and not (spec.kind is float and type(value) is int):
                raise RuntimeError(f"Control {name} takes {spec.kind.__name__}, not {type(value).__name__}")
            if not spec.low <= value <= spec.high:
                raise RuntimeError(f"Control {name} value {value} outside [{spec.low}, {spec.high}]")
            self._controls[name] = value

    def start(self, config=None, show_preview=False) -> None:
        self._opened()
        if self.camera_config is None and config is None:
            config = "preview"
        if config is not None:
            self.configure(config)
        if self.started:
            return
        self.started = True
        rig.started.append({"config": self.camera_config, "controls": dict(self._controls)})

    def capture_array(self, name="main", wait=None, signal_function=None) -> np.ndarray:
        self._opened()
        if not self.started:
            raise RuntimeError("capture_array() before start(): the real camera would wait for a frame forever")
        if not self._sensor.attached:
            raise RuntimeError("Camera frontend has timed out!")
        stream = self.camera_config.get(name) if name in ("main", "lores", "raw") else None
        if stream is None:
            raise KeyError(name)
        if stream["format"] not in _RGB_ORDER:
            raise NotImplementedError("the stand-in renders RGB streams only")
        width, height = stream["size"]
        scene = rig.scene.astype(np.float32)
        rows = (np.arange(height) * scene.shape[0] // height)
        cols = (np.arange(width) * scene.shape[1] // width)
        rgb = scene[rows][:, cols]
        if self._controls.get("AeEnable", True) is False:
            gain = self._controls.get("ExposureTime", 10_000) * self._controls.get("AnalogueGain", 2.0)
            rgb = rgb * (gain / AUTO_EXPOSURE_PRODUCT)
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
        out = rgb[..., list(_RGB_ORDER[stream["format"]])]
        if stream["format"].startswith("X"):
            out = np.concatenate([out, np.full((height, width, 1), 255, np.uint8)], axis=2)
        return np.ascontiguousarray(out)

    def stop(self) -> None:
        if self.started:
            self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera_config = None
        self._sensor.held_by = None
        rig.closed += 1

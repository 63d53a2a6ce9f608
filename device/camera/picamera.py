"""Raspberry Pi camera through ``picamera2`` (imported here only, lazily, so other machines never need it).

On Raspberry Pi OS install it from apt (``sudo apt install python3-picamera2``) and create the virtual
environment with ``--system-site-packages`` (docs/unit.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device.camera.base import Camera, Frame
from device.errors import HardwareError


class PiCameraConfig(BaseModel):
    """A Raspberry Pi camera module (libcamera) for still capture."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["picamera2"] = "picamera2"
    width: int = Field(2028, ge=64, le=9152, description="still width, pixels (HQ camera binned mode: 2028)")
    height: int = Field(1520, ge=64, le=6944, description="still height, pixels (HQ camera binned mode: 1520)")
    exposure_us: int | None = Field(None, ge=100, le=1_000_000,
                                    description="fixed exposure time, microseconds; None = auto exposure")
    analogue_gain: float | None = Field(None, ge=1.0, le=16.0, description="fixed analogue gain; None = auto")
    camera_index: int = Field(0, ge=0, le=7, description="which camera on a multi-camera Pi")


class PiCamera(Camera):
    """Still photographs from picamera2 at a configured resolution and exposure."""

    name = "picamera2"

    def __init__(self, cfg: PiCameraConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or PiCameraConfig()
        self._cam = None

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2  # lazy: only on a Raspberry Pi
        except ImportError as exc:
            raise HardwareError("picamera2 is not installed: run 'sudo apt install python3-picamera2' and create "
                                "the venv with --system-site-packages.") from exc
        try:
            cam = Picamera2(self.cfg.camera_index)
            # "RGB888" in libcamera is B,G,R in memory, i.e. what OpenCV calls BGR (picamera2 manual §4.2.2).
            config = cam.create_still_configuration(main={"size": (self.cfg.width, self.cfg.height),
                                                          "format": "RGB888"})
            cam.configure(config)
            controls = {}
            if self.cfg.exposure_us is not None:
                controls["ExposureTime"] = int(self.cfg.exposure_us)
                controls["AeEnable"] = False
            if self.cfg.analogue_gain is not None:
                controls["AnalogueGain"] = float(self.cfg.analogue_gain)
            if controls:
                cam.set_controls(controls)
            cam.start()
        except Exception as exc:  # libcamera raises RuntimeError/IndexError/OSError: all mean "no camera"
            raise HardwareError("The Raspberry Pi camera is not detected: check the ribbon cable and restart "
                                "the unit.") from exc
        self._cam = cam

    def _grab(self) -> Frame:
        try:
            bgr = self._cam.capture_array("main")
        except Exception as exc:  # whatever libcamera raises mid-session, the sentence below is what to do
            raise HardwareError("The Raspberry Pi camera stopped answering: check the ribbon cable and press the "
                                "button again.") from exc
        return Frame(rgb=bgr[..., 2::-1].copy(), source="picamera2")

    def _release(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
            finally:
                self._cam.close()
                self._cam = None

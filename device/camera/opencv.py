"""OpenCV ``VideoCapture`` camera: USB fundus adapters and webcams (V4L2 on Linux).

The device is opened lazily; a read failure (cable pulled) closes it and raises HardwareError, and the next
capture reopens it, so the unit recovers when the cable is plugged back in.
"""

from __future__ import annotations

from typing import Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from device.camera.base import Camera, Frame
from device.errors import HardwareError

# Frames a UVC camera buffers internally; reading this many first returns a fresh frame, not a stale one.
STALE_FRAMES = 3


class OpenCVCameraConfig(BaseModel):
    """A USB camera read through OpenCV VideoCapture."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["opencv"] = "opencv"
    device: int | str = Field(0, description="V4L2 index (0 = /dev/video0) or a device path; stream URLs (rtsp://, "
                                             "http://) are refused: the unit never opens a network connection")
    width: int = Field(1920, ge=64, le=8192, description="requested frame width, pixels")
    height: int = Field(1080, ge=64, le=8192, description="requested frame height, pixels")
    stale_frames: int = Field(STALE_FRAMES, ge=0, le=30, description="frames discarded before each still")

    @field_validator("device")
    @classmethod
    def _local(cls, device: int | str) -> int | str:
        if isinstance(device, str) and "://" in device:
            raise ValueError(f"{device!r} is a network stream and the unit never opens network connections; give the "
                             "camera's index (0) or device path (/dev/video0)")
        return device


class OpenCVCamera(Camera):
    """Still frames from a ``cv2.VideoCapture`` device."""

    name = "opencv"

    def __init__(self, cfg: OpenCVCameraConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or OpenCVCameraConfig()
        self._cap: cv2.VideoCapture | None = None

    def _open(self) -> None:
        cap = cv2.VideoCapture(self.cfg.device)
        if not cap.isOpened():
            cap.release()
            raise HardwareError(f"The USB camera {self.cfg.device!r} is not connected: plug it in and press the "
                                "button again.")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        self._cap = cap

    def _grab(self) -> Frame:
        assert self._cap is not None
        for _ in range(self.cfg.stale_frames):
            self._cap.grab()
        ok, bgr = self._cap.read()
        if not ok or bgr is None or bgr.ndim != 3:
            raise HardwareError("The USB camera stopped sending pictures: check its cable and press the button "
                                "again.")
        return Frame(rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), source=f"opencv:{self.cfg.device}")

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

"""Capture sources: Raspberry Pi camera, USB camera (OpenCV), image folder, and an in-memory fake.

The config's ``type`` picks the implementation (``picamera2``, ``opencv``, ``folder``, ``fake``)::

    from device.camera import open_camera
    camera = open_camera({"type": "folder", "path": "samples"})
    frame = camera.capture()          # Frame(rgb=uint8 (H, W, 3), source=..., captured_at=...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from device.camera.base import Camera, Frame
from device.camera.fake import FakeCamera, FakeCameraConfig, draw_fundus
from device.camera.folder import FolderCamera, FolderCameraConfig, list_images
from device.camera.opencv import OpenCVCamera, OpenCVCameraConfig
from device.camera.picamera import PiCamera, PiCameraConfig

CameraConfig = Annotated[Union[PiCameraConfig, OpenCVCameraConfig, FolderCameraConfig, FakeCameraConfig],
                         Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(CameraConfig)

__all__ = ["Camera", "CameraConfig", "FakeCamera", "FakeCameraConfig", "FolderCamera", "FolderCameraConfig",
           "Frame", "OpenCVCamera", "OpenCVCameraConfig", "PiCamera", "PiCameraConfig", "draw_fundus",
           "list_images", "open_camera"]


def open_camera(cfg: object, base_dir: Path | None = None) -> Camera:
    """Build the camera a config describes (the device itself is opened on the first capture).

    Args:
        cfg: a camera config object or mapping with a ``type`` key.
        base_dir: folder that relative folder-source paths are resolved against (the config file's folder).

    Returns:
        A Camera; nothing is opened yet, so building never fails on absent hardware.
    """
    if not isinstance(cfg, (PiCameraConfig, OpenCVCameraConfig, FolderCameraConfig, FakeCameraConfig)):
        cfg = _ADAPTER.validate_python(cfg)
    if isinstance(cfg, PiCameraConfig):
        return PiCamera(cfg)
    if isinstance(cfg, OpenCVCameraConfig):
        return OpenCVCamera(cfg)
    if isinstance(cfg, FolderCameraConfig):
        return FolderCamera.from_config(cfg, base_dir)
    return FakeCamera.from_config(cfg)

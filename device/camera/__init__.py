"""Capture sources: Raspberry Pi camera, USB camera (OpenCV), image folder, and an in-memory fake.

The config's ``type`` picks the implementation (``picamera2``, ``opencv``, ``folder``, ``fake``)::

    from device.camera import open_camera
    camera = open_camera({"type": "folder", "path": "samples"})
    frame = camera.capture()          # Frame(rgb=uint8 (H, W, 3), source=..., captured_at=...)
"""

from __future__ import annotations

from pathlib import Path

from common.factory import ConfigTable
from device.camera.base import Camera, Frame
from device.camera.fake import FakeCamera, FakeCameraConfig, draw_fundus
from device.camera.folder import FolderCamera, FolderCameraConfig
from device.camera.opencv import OpenCVCamera, OpenCVCameraConfig
from device.camera.picamera import PiCamera, PiCameraConfig

# Config ``type`` -> (config class, implementation): the config union and open_camera() both come from this table.
CAMERAS = ConfigTable({
    "picamera2": (PiCameraConfig, PiCamera),
    "opencv": (OpenCVCameraConfig, OpenCVCamera),
    "folder": (FolderCameraConfig, FolderCamera),
    "fake": (FakeCameraConfig, FakeCamera),
})
CameraConfig = CAMERAS.union

__all__ = ["CAMERAS", "Camera", "CameraConfig", "FakeCamera", "FakeCameraConfig", "FolderCamera", "FolderCameraConfig",
           "Frame", "OpenCVCamera", "OpenCVCameraConfig", "PiCamera", "PiCameraConfig", "draw_fundus",
           "open_camera"]


def open_camera(cfg: object, base_dir: Path | None = None) -> Camera:
    """Build the camera a config describes (the device itself is opened on the first capture).

    Args:
        cfg: a camera config object or mapping with a ``type`` key.
        base_dir: folder that relative folder-source paths are resolved against (the config file's folder).

    Returns:
        A Camera; nothing is opened yet, so building never fails on absent hardware.
    """
    return CAMERAS.open(cfg, base_dir)

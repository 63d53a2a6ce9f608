"""Linux framebuffer sink (``/dev/fb0``): shows screens on a Pi's HDMI or SPI panel with no desktop running.

Geometry and pixel format come from sysfs (``/sys/class/graphics/fb0/{virtual_size,bits_per_pixel,stride}``).
16 bits per pixel is RGB565 (little-endian), 32 bits is XRGB8888 (bytes B, G, R, X in memory — the Pi's
default); ``pixel_format`` overrides the guess for panels wired as XBGR8888. Tests point ``device`` and
``sysfs_dir`` at a plain file and a folder, i.e. a file-backed framebuffer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.display.base import Display, letterbox
from device.errors import HardwareError

PIXEL_FORMATS = ("auto", "RGB565", "XRGB8888", "XBGR8888")
# Linux fbdev sysfs attribute names (Documentation/ABI/testing/sysfs-class-graphics... fbdev core fbsysfs.c).
SYSFS_SIZE, SYSFS_BPP, SYSFS_STRIDE = "virtual_size", "bits_per_pixel", "stride"


class FramebufferDisplayConfig(BaseModel):
    """Show screens on a Linux framebuffer device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["framebuffer"] = "framebuffer"
    device: str = Field("/dev/fb0", description="framebuffer device (or a file for tests)")
    sysfs_dir: str | None = Field(None, description="folder with virtual_size/bits_per_pixel/stride; default "
                                                    "/sys/class/graphics/<device name>")
    pixel_format: Literal["auto", "RGB565", "XRGB8888", "XBGR8888"] = Field(
        "auto", description="auto = from bits_per_pixel (16 -> RGB565, 32 -> XRGB8888)")


def encode_pixels(rgb: np.ndarray, pixel_format: str) -> np.ndarray:
    """Convert RGB uint8 (H, W, 3) to framebuffer pixels.

    Args:
        rgb: the image, already at the framebuffer's size.
        pixel_format: ``RGB565``, ``XRGB8888`` or ``XBGR8888``.

    Returns:
        uint8 (H, W, bytes_per_pixel) in memory order (little-endian words).
    """
    if pixel_format == "RGB565":
        r = rgb[..., 0].astype(np.uint16) >> 3
        g = rgb[..., 1].astype(np.uint16) >> 2
        b = rgb[..., 2].astype(np.uint16) >> 3
        return ((r << 11) | (g << 5) | b).astype("<u2").view(np.uint8).reshape(rgb.shape[0], rgb.shape[1], 2)
    out = np.zeros((*rgb.shape[:2], 4), np.uint8)
    out[..., 3] = 255
    if pixel_format == "XRGB8888":  # 0xXXRRGGBB little-endian: B, G, R, X
        out[..., 0], out[..., 1], out[..., 2] = rgb[..., 2], rgb[..., 1], rgb[..., 0]
    elif pixel_format == "XBGR8888":  # 0xXXBBGGRR little-endian: R, G, B, X
        out[..., :3] = rgb
    else:
        raise ValueError(f"Unknown pixel format {pixel_format!r}: use RGB565, XRGB8888 or XBGR8888.")
    return out


class FramebufferDisplay(Display):
    """Writes letterboxed screens straight into framebuffer memory, row by row with the device's stride."""

    def __init__(self, cfg: FramebufferDisplayConfig | None = None) -> None:
        self.cfg = cfg or FramebufferDisplayConfig()
        sysfs = Path(self.cfg.sysfs_dir or f"/sys/class/graphics/{Path(self.cfg.device).name}")
        try:
            w, h = (int(v) for v in (sysfs / SYSFS_SIZE).read_text().strip().split(","))
            self.bpp = int((sysfs / SYSFS_BPP).read_text().strip())
            stride_file = sysfs / SYSFS_STRIDE
            self.stride = int(stride_file.read_text().strip()) if stride_file.exists() else w * self.bpp // 8
        except (OSError, ValueError) as exc:
            raise HardwareError(f"The framebuffer {self.cfg.device} is not available: check the display "
                                "connection or choose the file display in the config.") from exc
        fmt = self.cfg.pixel_format
        if fmt == "auto":
            fmt = {16: "RGB565", 32: "XRGB8888"}.get(self.bpp, "")
        if not fmt or {"RGB565": 16}.get(fmt, 32) != self.bpp:
            raise HardwareError(f"The framebuffer uses {self.bpp} bits per pixel, which this unit cannot drive: "
                                "set it to 16 or 32 bits (fbset -depth 16).")
        self.pixel_format = fmt
        self.size = (w, h)
        try:
            self._fd = os.open(self.cfg.device, os.O_RDWR)
        except OSError as exc:
            raise HardwareError(f"The framebuffer {self.cfg.device} cannot be opened: add the user to the "
                                "'video' group or run the unit as that user.") from exc
        self.frames = 0

    def show(self, rgb: np.ndarray, label: str = "") -> None:
        """Letterbox ``rgb`` to the framebuffer size and write it (one pwrite per frame, stride respected)."""
        w, h = self.size
        pixels = encode_pixels(letterbox(rgb, w, h), self.pixel_format).reshape(h, -1)
        row = pixels.shape[1]
        if self.stride != row:
            padded = np.zeros((h, self.stride), np.uint8)
            padded[:, :row] = pixels
            pixels = padded
        try:
            os.pwrite(self._fd, pixels.tobytes(), 0)
        except OSError as exc:
            raise HardwareError("The screen stopped accepting images: check the display cable.") from exc
        self.frames += 1

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

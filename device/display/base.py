"""The display interface: a sink shows one finished RGB image (the result screen), nothing else.

Screens are rendered once as images (device.screen_render) so every sink shows exactly what the records keep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import cv2
import numpy as np


class Display(ABC):
    """Shows full-screen RGB images. ``size`` is the (width, height) screens should be rendered at."""

    size: tuple[int, int] = (800, 480)

    @classmethod
    def from_config(cls, cfg) -> Display:
        """Open the display from its config."""
        return cls(cfg)

    @abstractmethod
    def show(self, rgb: np.ndarray, label: str = "") -> None:
        """Show an RGB uint8 (H, W, 3) image; ``label`` names it (file sinks use it in the file name)."""

    def close(self) -> None:  # noqa: B027 - optional hook: a sink that holds nothing has nothing to release
        """Release the display (idempotent)."""


def letterbox(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fit an image inside width x height keeping its aspect ratio, centred on black.

    Args:
        rgb: uint8 (H, W, 3).
        width, height: target size in pixels.

    Returns:
        uint8 (height, width, 3).
    """
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    return out

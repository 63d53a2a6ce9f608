"""An in-memory display for tests: records what was shown."""

from __future__ import annotations

from collections import deque
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.display.base import Display

# Images kept in memory; older ones are dropped so a 1,000-screen soak test stays flat in memory.
KEEP_IMAGES = 8


class FakeDisplayConfig(BaseModel):
    """A display that only records what it was asked to show."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fake"] = "fake"
    width: int = Field(800, ge=160, le=3840, description="screen width, pixels")
    height: int = Field(480, ge=120, le=2160, description="screen height, pixels")


class FakeDisplay(Display):
    """Records ``shown`` (every label, in order) and keeps the last few images in ``images``."""

    def __init__(self, cfg: FakeDisplayConfig | None = None) -> None:
        cfg = cfg or FakeDisplayConfig()
        self.size = (cfg.width, cfg.height)
        self.shown: list[str] = []
        self.images: deque[np.ndarray] = deque(maxlen=KEEP_IMAGES)
        self.closed = False

    def show(self, rgb: np.ndarray, label: str = "") -> None:
        """Record the label and keep a copy of the image."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError("A screen must be an RGB uint8 image of shape (H, W, 3).")
        self.shown.append(label)
        self.images.append(rgb.copy())

    @property
    def last(self) -> np.ndarray | None:
        """The most recent image shown, or None."""
        return self.images[-1] if self.images else None

    def close(self) -> None:
        self.closed = True

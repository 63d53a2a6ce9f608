"""An in-memory camera for tests, the soak test and laptop demos; it records every capture.

It serves given frames in turn, or draws simple synthetic fundus-like photographs (a lit disc with vessels on
black) when none are given. ``unplug()`` / ``plug()`` simulate a camera cable pulled and plugged back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.camera.base import Camera, Frame
from device.errors import HardwareError


class FakeCameraConfig(BaseModel):
    """A simulated camera drawing synthetic fundus-like photographs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fake"] = "fake"
    width: int = Field(640, ge=64, le=8192, description="photograph width, pixels")
    height: int = Field(480, ge=64, le=8192, description="photograph height, pixels")
    seed: int = Field(0, ge=0, description="first random seed; each capture uses the next one")


def draw_fundus(seed: int, width: int = 640, height: int = 480) -> np.ndarray:
    """Draw a simple fundus-like photograph: an orange disc with an optic disc and dark vessels on black.

    Args:
        seed: random seed (vessel layout, brightness, small lesions).
        width, height: size in pixels.

    Returns:
        RGB uint8 (height, width, 3). Not a realistic retina: enough for the gate and the pipeline to run.
    """
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    cx, cy, r = width // 2, height // 2, int(min(width, height) * 0.46)
    base = np.array([170, 80, 40]) * rng.uniform(0.85, 1.1)
    cv2.circle(img, (cx, cy), r, tuple(int(v) for v in np.clip(base, 0, 255)), -1, lineType=cv2.LINE_AA)
    od = (cx + int(r * rng.uniform(0.3, 0.5)) * (1 if seed % 2 else -1), cy + int(r * rng.uniform(-0.1, 0.1)))
    cv2.circle(img, od, max(2, r // 7), (245, 215, 150), -1, lineType=cv2.LINE_AA)
    thick = max(1, r // 60)
    for _ in range(10):
        pts = [od]
        angle = rng.uniform(0, 2 * np.pi)
        for step in range(1, 6):
            angle += rng.normal(0, 0.35)
            pts.append((int(od[0] + np.cos(angle) * r * 0.18 * step), int(od[1] + np.sin(angle) * r * 0.18 * step)))
        cv2.polylines(img, [np.array(pts, np.int32)], False, (110, 25, 20), thick, lineType=cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 6))):
        p = (int(cx + rng.uniform(-0.6, 0.6) * r), int(cy + rng.uniform(-0.6, 0.6) * r))
        cv2.circle(img, p, max(1, r // 50), (120, 20, 15) if rng.random() < 0.5 else (235, 220, 120), -1)
    noise = rng.normal(0, 4, img.shape)
    inside = cv2.circle(np.zeros((height, width), np.uint8), (cx, cy), r, 1, -1).astype(bool)
    out = img.astype(np.float32)
    out[inside] += noise[inside]
    out[~inside] = 0
    return np.clip(out, 0, 255).astype(np.uint8)


class FakeCamera(Camera):
    """Serves ``frames`` in turn (cycling), or synthetic photographs; records each capture in ``captures``.

    Attributes:
        captures: ``Frame.source`` of every successful capture, in order.
        failures: how many captures raised because the camera was unplugged.
        opens: how many times the camera was (re)opened.
    """

    name = "fake"

    def __init__(self, frames: Sequence[np.ndarray] | None = None, width: int = 640, height: int = 480,
                 seed: int = 0) -> None:
        super().__init__()
        self.frames = list(frames) if frames is not None else None
        self.width, self.height, self.seed = width, height, seed
        self.captures: list[str] = []
        self.failures = 0
        self.opens = 0
        self.plugged = True
        self._count = 0

    @classmethod
    def from_config(cls, cfg: FakeCameraConfig, base_dir: Path | None = None) -> FakeCamera:
        """Build from a config."""
        return cls(width=cfg.width, height=cfg.height, seed=cfg.seed)

    def unplug(self) -> None:
        """Simulate the cable being pulled: captures fail until ``plug()``."""
        self.plugged = False

    def plug(self) -> None:
        """Simulate the cable being plugged back in."""
        self.plugged = True

    def _open(self) -> None:
        if not self.plugged:
            self.failures += 1
            raise HardwareError("The camera is not connected: plug it in and press the button again.")
        self.opens += 1

    def _grab(self) -> Frame:
        if not self.plugged:
            self.failures += 1
            raise HardwareError("The camera stopped sending pictures: check its cable and press the button again.")
        i = self._count
        self._count += 1
        if self.frames:
            rgb = self.frames[i % len(self.frames)]
        else:
            rgb = draw_fundus(self.seed + i, self.width, self.height)
        source = f"fake:{i}"
        self.captures.append(source)
        return Frame(rgb=rgb, source=source)

    def _release(self) -> None:
        pass

"""A display sink that writes each screen as a PNG file (demo output, headless units, screenshots)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device.atomic import write_atomic
from device.display.base import Display


class FileDisplayConfig(BaseModel):
    """Write every screen to a folder as PNG."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["file"] = "file"
    folder: str = Field("demo_output/screens", description="output folder (created); relative to the working "
                                                           "directory")
    width: int = Field(800, ge=160, le=3840, description="screen width, pixels")
    height: int = Field(480, ge=120, le=2160, description="screen height, pixels")
    keep_all: bool = Field(True, description="one numbered file per screen; False = overwrite 'screen.png'")


class FileDisplay(Display):
    """Writes screens atomically as ``NNNN_<label>.png`` (or ``screen.png``); ``written`` lists the paths."""

    def __init__(self, cfg: FileDisplayConfig | None = None) -> None:
        self.cfg = cfg or FileDisplayConfig()
        self.size = (self.cfg.width, self.cfg.height)
        self.folder = Path(self.cfg.folder)
        self.written: list[Path] = []

    def show(self, rgb: np.ndarray, label: str = "") -> None:
        """Encode ``rgb`` as PNG and write it atomically."""
        if self.cfg.keep_all:
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "screen"
            path = self.folder / f"{len(self.written) + 1:04d}_{safe}.png"
        else:
            path = self.folder / "screen.png"
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        if not ok:  # pragma: no cover - OpenCV cannot fail on a valid uint8 image
            raise ValueError("The screen image could not be encoded as PNG.")
        write_atomic(path, buf.tobytes(), fsync=False, private=True)  # a result screen shows the patient's retina
        self.written.append(path)

"""A camera that serves image files from a folder or a list of files (demo, tests, batch screening).

Files are served in sorted order; with ``loop=True`` the source starts again after the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device.camera.base import Camera, Frame
from device.errors import HardwareError, ImageReadError
from device.imageio import list_images, load_image


class FolderCameraConfig(BaseModel):
    """Serve photographs from a folder (or listed files) instead of a camera."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["folder"] = "folder"
    path: str = Field(..., description="folder of images (sorted by name), or one image file; relative paths are "
                                       "relative to the config file")
    loop: bool = Field(True, description="start again at the first image after the last one")


class FolderCamera(Camera):
    """Serves image files as frames; records each path it served in ``served``."""

    name = "folder"

    def __init__(self, paths: Sequence[str | Path], loop: bool = True) -> None:
        super().__init__()
        self._paths_arg = list(paths)
        self.loop = loop
        self.files: list[Path] = []
        self.served: list[str] = []
        self._next = 0

    @classmethod
    def from_config(cls, cfg: FolderCameraConfig, base_dir: Path | None = None) -> FolderCamera:
        """Build from a config; a relative ``path`` is resolved against ``base_dir``."""
        path = Path(cfg.path)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return cls([path], loop=cfg.loop)

    def _open(self) -> None:
        self.files = list_images(self._paths_arg)
        if not self.files:
            where = ", ".join(str(p) for p in self._paths_arg)
            raise HardwareError(f"No images found in {where}: put JPEG or PNG photographs there or fix the path.")

    def _grab(self) -> Frame:
        if self._next >= len(self.files):
            if not self.loop:
                raise HardwareError("The image folder has no more photographs: add images or enable looping.")
            self._next = 0
        path = self.files[self._next]
        self._next += 1
        try:
            rgb = load_image(path)
        except ImageReadError:
            self.served.append(str(path))
            raise
        self.served.append(str(path))
        return Frame(rgb=rgb, source=str(path))

    def capture(self) -> Frame:
        """Serve the next file. An unreadable file raises ImageReadError without closing the source."""
        self.open()
        try:
            return self._grab()
        except ImageReadError:
            raise
        except Exception:
            self.close()
            raise

    def _release(self) -> None:
        pass

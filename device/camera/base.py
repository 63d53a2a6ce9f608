"""The camera interface every capture source implements, and the frame it returns.

A camera is opened once, asked for still frames with :meth:`Camera.capture`, and closed. A camera that is
unplugged raises :class:`device.errors.HardwareError` (one sentence); the next ``capture()`` tries to reopen it,
so the kiosk survives a cable pulled and plugged back without restarting.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One still photograph from a camera.

    Attributes:
        rgb: uint8 (H, W, 3) in RGB order.
        source: where it came from (file path, ``picamera2``, ``opencv:0``, ``fake:3``).
        captured_at: wall-clock capture time, seconds since the epoch.
    """

    rgb: np.ndarray = field(repr=False)
    source: str
    captured_at: float = field(default_factory=time.time)


class Camera(ABC):
    """A still-photograph source. Subclasses implement ``_open``, ``_grab`` and ``_release``.

    ``capture()`` opens the device on first use and after a failure, so a camera that was unplugged and plugged
    back in works again on the next trigger.
    """

    name = "camera"

    def __init__(self) -> None:
        self._is_open = False

    @classmethod
    def from_config(cls, cfg, base_dir: Path | None = None) -> Camera:
        """Build the camera from its config (``base_dir``: folder that relative paths in it are relative to)."""
        return cls(cfg)

    @property
    def is_open(self) -> bool:
        """True while the underlying device is open."""
        return self._is_open

    def open(self) -> None:
        """Open the device (idempotent). Raises HardwareError with one sentence when it is absent."""
        if not self._is_open:
            self._open()
            self._is_open = True

    def capture(self) -> Frame:
        """Take one still photograph.

        Returns:
            The frame (RGB uint8).

        Raises:
            HardwareError: the camera is absent or stopped answering; the next call tries to reopen it.
        """
        self.open()
        try:
            return self._grab()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Release the device (idempotent); never raises."""
        if self._is_open:
            self._is_open = False
            try:
                self._release()
            except Exception:  # noqa: BLE001 - releasing a vanished device must not crash the kiosk
                pass

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def _open(self) -> None:
        """Open the device; raise HardwareError when it is not there."""

    @abstractmethod
    def _grab(self) -> Frame:
        """Return one frame; raise HardwareError when the device fails."""

    @abstractmethod
    def _release(self) -> None:
        """Release the device."""

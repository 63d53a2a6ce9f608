"""Typed errors whose message is one sentence a person can act on.

Every error the unit can show on its screen derives from :class:`ScreeningError`; ``str(error)`` is the
sentence to show (what is wrong and what to do), never a traceback.
"""

from __future__ import annotations


class ScreeningError(Exception):
    """Base class: ``str(self)`` is one sentence saying what is wrong and what to do."""


class ImageError(ScreeningError, ValueError):
    """An input photograph cannot be used."""


class ImageReadError(ImageError):
    """The file is missing, empty, truncated, corrupt or not an image."""


class ImageTooSmallError(ImageError):
    """The photograph is smaller than the minimum size."""


class BlankImageError(ImageError):
    """The photograph is (almost) uniformly black or flat."""


class NotFundusError(ImageError):
    """No circular retinal field of view was found in the photograph."""


class ModelError(ScreeningError):
    """A model bundle is missing, tampered with, or does not match its card."""


class ConfigError(ScreeningError, ValueError):
    """A configuration file is missing or invalid."""


class HardwareError(ScreeningError):
    """A camera, display, disk or microcontroller is unavailable."""

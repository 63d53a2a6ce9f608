"""Display sinks for the result screen: Linux framebuffer, PNG files, and an in-memory fake.

The config's ``type`` picks the implementation::

    from device.display import open_display
    display = open_display({"type": "file", "folder": "demo_output/screens"})
    display.show(screen_rgb, label="P001_right")
"""

from __future__ import annotations

from common.factory import ConfigTable
from device.display.base import Display, letterbox
from device.display.fake import FakeDisplay, FakeDisplayConfig
from device.display.file import FileDisplay, FileDisplayConfig
from device.display.framebuffer import FramebufferDisplay, FramebufferDisplayConfig, encode_pixels

# Config ``type`` -> (config class, implementation): the config union and open_display() both come from this table.
DISPLAYS = ConfigTable({
    "framebuffer": (FramebufferDisplayConfig, FramebufferDisplay),
    "file": (FileDisplayConfig, FileDisplay),
    "fake": (FakeDisplayConfig, FakeDisplay),
})
DisplayConfig = DISPLAYS.union

__all__ = ["DISPLAYS", "Display", "DisplayConfig", "FakeDisplay", "FakeDisplayConfig", "FileDisplay",
           "FileDisplayConfig", "FramebufferDisplay", "FramebufferDisplayConfig", "encode_pixels", "letterbox",
           "open_display"]


def open_display(cfg: object) -> Display:
    """Open the display a config describes.

    Args:
        cfg: a display config object or a mapping with a ``type`` key.

    Returns:
        The Display.

    Raises:
        HardwareError: the framebuffer is absent or uses an unsupported pixel format (one sentence).
    """
    return DISPLAYS.open(cfg)

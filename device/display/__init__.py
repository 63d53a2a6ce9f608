"""Display sinks for the result screen: Linux framebuffer, PNG files, and an in-memory fake.

The config's ``type`` picks the implementation::

    from device.display import open_display
    display = open_display({"type": "file", "folder": "demo_output/screens"})
    display.show(screen_rgb, label="P001_right")
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from device.display.base import Display, letterbox
from device.display.fake import FakeDisplay, FakeDisplayConfig
from device.display.file import FileDisplay, FileDisplayConfig
from device.display.framebuffer import FramebufferDisplay, FramebufferDisplayConfig, encode_pixels

DisplayConfig = Annotated[Union[FramebufferDisplayConfig, FileDisplayConfig, FakeDisplayConfig],
                          Field(discriminator="type")]
_ADAPTER: TypeAdapter = TypeAdapter(DisplayConfig)

__all__ = ["Display", "DisplayConfig", "FakeDisplay", "FakeDisplayConfig", "FileDisplay", "FileDisplayConfig",
           "FramebufferDisplay", "FramebufferDisplayConfig", "encode_pixels", "letterbox", "open_display"]


def open_display(cfg: object) -> Display:
    """Open the display a config describes.

    Args:
        cfg: a display config object or a mapping with a ``type`` key.

    Returns:
        The Display.

    Raises:
        HardwareError: the framebuffer is absent or uses an unsupported pixel format (one sentence).
    """
    if not isinstance(cfg, (FramebufferDisplayConfig, FileDisplayConfig, FakeDisplayConfig)):
        cfg = _ADAPTER.validate_python(cfg)
    if isinstance(cfg, FramebufferDisplayConfig):
        return FramebufferDisplay(cfg)
    if isinstance(cfg, FileDisplayConfig):
        return FileDisplay(cfg)
    return FakeDisplay(cfg)

"""Validated configuration of the microcontroller link; ``type`` picks the implementation (Frigate style).

Example (YAML/JSON in the unit's config)::

    link: {type: serial, url: /dev/serial/by-id/usb-MicroPython_Board_in_FS_mode_e6614c-if00}

All durations are seconds. No I/O happens here: the config only describes the link;
``firmware_bridge.factory.open_link`` opens it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# pyserial URL handlers that stay on this machine; socket:// and rfc2217:// (and any unknown one) would open a
# network connection, which no code path of the unit may do (README "Privacy").
LOCAL_URL_SCHEMES = frozenset({"loop", "spy", "hwgrep", "alt", "cp2110"})


def network_url(url: str) -> bool:
    """Whether a pyserial URL would reach beyond this machine (``socket://``, ``rfc2217://``, an unknown scheme,
    or a local handler wrapping one)."""
    schemes = {m.lower() for m in re.findall(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)}
    return bool(schemes - LOCAL_URL_SCHEMES)


class LinkConfigError(ValueError):
    """The microcontroller link configuration is invalid; ``str()`` is one sentence naming the bad field."""


class NoneLinkConfig(BaseModel):
    """No microcontroller fitted: the unit runs without button, LEDs, buzzer or flash control."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["none"] = "none"


class FakeLinkConfig(BaseModel):
    """An in-memory microcontroller that records calls (laptop demo, tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fake"] = "fake"
    connected: bool = Field(True, description="whether the fake starts connected")


class SerialLinkConfig(BaseModel):
    """The real microcontroller on a serial port (USB CDC, UART, or any pyserial URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["serial"] = "serial"
    url: str = Field(..., min_length=1, max_length=4096, description="serial port: /dev/ttyACM0, "
                     "/dev/serial/by-id/..., or a local pyserial URL (loop://, spy://, hwgrep://); network URLs "
                     "(socket://, rfc2217://) are refused")
    baudrate: int = Field(115200, ge=1200, le=4_000_000, description="bits/s (ignored by USB CDC, used by UARTs)")
    retry_timeout_s: float = Field(0.2, gt=0, le=10, description="wait for an ACK before resending a command")
    max_retries: int = Field(4, ge=0, le=50, description="resends before a command is reported as failed")
    handshake_timeout_s: float = Field(0.5, gt=0, le=10, description="wait for the HELLO reply before asking again")
    heartbeat_interval_s: float = Field(0.5, gt=0, le=60, description="PING period while connected")
    silence_timeout_s: float = Field(2.0, gt=0, le=300, description="no valid frame for this long = microcontroller "
                                                                    "silent: report it and handshake again")
    reconnect_interval_s: float = Field(1.0, gt=0, le=60, description="pause between attempts to reopen the port")
    queue_size: int = Field(64, ge=1, le=4096, description="commands waiting to be sent; the oldest is dropped "
                                                           "(and reported) when full")

    @field_validator("url")
    @classmethod
    def _local(cls, url: str) -> str:
        if network_url(url):
            raise ValueError(f"{url!r} is a network URL and the unit never opens network connections; give the "
                             "microcontroller's serial port, e.g. /dev/ttyACM0")
        return url

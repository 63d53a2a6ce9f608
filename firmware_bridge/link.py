"""The one interface the kiosk uses to talk to the unit's microcontroller, and the events it reports.

The kiosk holds a :class:`UnitLink` and, once per loop iteration, calls :meth:`UnitLink.poll_events` (never blocks)
and the output methods (never block, never raise). ``firmware_bridge.factory.open_link`` picks the implementation by
the config ``type``:

* ``none``   -> :class:`firmware_bridge.fake.NullLink`: no microcontroller fitted; everything is a no-op.
* ``fake``   -> :class:`firmware_bridge.fake.FakeLink`: records every call (tests, laptop demo).
* ``serial`` -> :class:`firmware_bridge.serial_link.SerialLink`: the real pyserial driver (any pyserial URL).

Example::

    from firmware_bridge.factory import open_link
    link = open_link({"type": "serial", "url": "/dev/ttyACM0"})
    for event in link.poll_events():
        if event.kind == "button_pressed":
            link.flash(120)
    link.show_status("referable")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Event kinds delivered by poll_events().
EVENT_KINDS = ("button_pressed", "button_released", "connected", "disconnected", "error")


@dataclass(frozen=True)
class Event:
    """Something the microcontroller link reports to the kiosk.

    Attributes:
        kind: one of ``EVENT_KINDS``.
        detail: a human-readable sentence (button id, firmware version, or what went wrong and what to do).
        time: wall-clock time of the event, seconds since the epoch (``time.time()``).
        number: for button events, the microcontroller's event counter (0..65535, wraps); gaps mean lost events.
    """

    kind: str
    detail: str = ""
    time: float = field(default_factory=time.time)
    number: int | None = None


@runtime_checkable
class UnitLink(Protocol):
    """What the kiosk needs from the microcontroller. No method blocks or raises on link trouble."""

    connected: bool

    def poll_events(self) -> list[Event]:
        """Return the events received since the last call (possibly empty); never blocks."""
        ...

    def show_status(self, status: str) -> None:
        """Show a unit status (one of ``firmware_bridge.vocabulary.STATUSES``) on the status LEDs."""
        ...

    def beep(self, pattern: str) -> None:
        """Play a buzzer pattern (one of ``firmware_bridge.vocabulary.BEEP_PATTERNS``)."""
        ...

    def set_illumination(self, level: int) -> None:
        """Set the steady (focusing) illumination, 0 (off) .. 255 (full)."""
        ...

    def flash(self, duration_ms: int) -> None:
        """Fire the capture flash for ``duration_ms`` milliseconds (1 .. ``protocol.FLASH_MAX_MS``); never replayed."""
        ...

    def set_fixation(self, target: int) -> None:
        """Light fixation target ``target`` (1 .. ``protocol.FIXATION_TARGETS``), or none with 0."""
        ...

    def close(self) -> None:
        """Stop the link and release the port; further calls are ignored."""
        ...

"""The one interface the kiosk uses to talk to the unit's microcontroller, and its two software implementations.

The kiosk holds a :class:`UnitLink` and, once per loop iteration, calls :meth:`UnitLink.poll_events` (never blocks)
and the output methods (never block, never raise). Three implementations pick by the config ``type``:

* ``none``   -> :class:`NullLink`: no microcontroller fitted; everything is a no-op, ``connected`` stays False.
* ``fake``   -> :class:`FakeLink`: records every call (tests, laptop demo); ``press_button()`` injects presses.
* ``serial`` -> :class:`firmware_bridge.serial_link.SerialLink`: the real pyserial driver (any pyserial URL).

Example::

    from firmware_bridge.link import open_link
    link = open_link({"type": "serial", "url": "/dev/ttyACM0"})
    for event in link.poll_events():
        if event.kind == "button_pressed":
            link.flash(120)
    link.show_status("referable")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Event kinds delivered by poll_events().
EVENT_KINDS = ("button_pressed", "button_released", "connected", "disconnected", "error")
# Unit states shown on the status LEDs (the LED pattern per status lives in firmware_bridge.commands).
STATUSES = ("ready", "busy", "referable", "non_referable", "ungradable", "error")
# Buzzer patterns (tone sequences live in firmware_bridge.commands).
BEEP_PATTERNS = ("ok", "attention", "error")
ILLUMINATION_MAX = 255  # 8-bit PWM duty on the board
FLASH_MAX_MS = 2000  # longest flash pulse the firmware accepts (eye safety: fundus flashes are ~1-200 ms)
FIXATION_TARGETS = 5  # fixation LEDs on the reference board; 0 switches the target off


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
        """Show a unit status (one of ``STATUSES``) on the status LEDs."""
        ...

    def beep(self, pattern: str) -> None:
        """Play a buzzer pattern (one of ``BEEP_PATTERNS``)."""
        ...

    def set_illumination(self, level: int) -> None:
        """Set the steady (focusing) illumination, 0 (off) .. 255 (full)."""
        ...

    def flash(self, duration_ms: int) -> None:
        """Fire the capture flash for ``duration_ms`` milliseconds (1 .. ``FLASH_MAX_MS``); never replayed."""
        ...

    def set_fixation(self, target: int) -> None:
        """Light fixation target ``target`` (1 .. ``FIXATION_TARGETS``), or none with 0."""
        ...

    def close(self) -> None:
        """Stop the link and release the port; further calls are ignored."""
        ...


def check_status(status: str) -> int:
    """Validate a status name and return its index in ``STATUSES``; raises ValueError with one sentence."""
    if status not in STATUSES:
        raise ValueError(f"Unknown unit status {status!r}: use one of {', '.join(STATUSES)}.")
    return STATUSES.index(status)


def check_beep(pattern: str) -> int:
    """Validate a beep pattern name and return its index in ``BEEP_PATTERNS``; raises ValueError."""
    if pattern not in BEEP_PATTERNS:
        raise ValueError(f"Unknown beep pattern {pattern!r}: use one of {', '.join(BEEP_PATTERNS)}.")
    return BEEP_PATTERNS.index(pattern)


def check_level(level: int) -> int:
    """Validate an illumination level (0..255) and return it as int; raises ValueError."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= ILLUMINATION_MAX:
        raise ValueError(f"Illumination level {level!r} is out of range: use an integer from 0 to {ILLUMINATION_MAX}.")
    return level


def check_flash(duration_ms: int) -> int:
    """Validate a flash duration in ms (1..FLASH_MAX_MS) and return it; raises ValueError."""
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or not 1 <= duration_ms <= FLASH_MAX_MS:
        raise ValueError(f"Flash duration {duration_ms!r} ms is out of range: use an integer from 1 to {FLASH_MAX_MS}.")
    return duration_ms


def check_fixation(target: int) -> int:
    """Validate a fixation target (0..FIXATION_TARGETS) and return it; raises ValueError."""
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= FIXATION_TARGETS:
        raise ValueError(f"Fixation target {target!r} does not exist: use 0 (off) or 1 to {FIXATION_TARGETS}.")
    return target


class NullLink:
    """No microcontroller configured: every output is ignored, no event ever arrives, ``connected`` is False."""

    connected = False

    def poll_events(self) -> list[Event]:
        return []

    def show_status(self, status: str) -> None:
        check_status(status)

    def beep(self, pattern: str) -> None:
        check_beep(pattern)

    def set_illumination(self, level: int) -> None:
        check_level(level)

    def flash(self, duration_ms: int) -> None:
        check_flash(duration_ms)

    def set_fixation(self, target: int) -> None:
        check_fixation(target)

    def close(self) -> None:
        pass


class FakeLink:
    """An in-memory microcontroller for tests and the laptop demo; records every call.

    ``calls`` holds ``(method, argument)`` tuples in call order, e.g. ``("show_status", "busy")``;
    ``statuses``, ``beeps``, ``illumination``, ``flashes`` and ``fixations`` hold the arguments per method.
    ``press_button()`` / ``release_button()`` / ``click()`` queue button events; ``unplug()`` / ``plug()`` queue
    disconnected / connected events. Thread-safe, so a test thread may press while the kiosk loop polls.
    """

    def __init__(self, connected: bool = True) -> None:
        self.connected = connected
        self.closed = False
        self.calls: list[tuple[str, object]] = []
        self.statuses: list[str] = []
        self.beeps: list[str] = []
        self.illumination: list[int] = []
        self.flashes: list[int] = []
        self.fixations: list[int] = []
        self._events: list[Event] = []
        self._lock = threading.Lock()
        if connected:
            self._events.append(Event("connected", "fake microcontroller"))

    # -- test controls ------------------------------------------------------------------------------------------
    def inject(self, kind: str, detail: str = "") -> None:
        """Queue an event of any kind in ``EVENT_KINDS``."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"Unknown event kind {kind!r}: use one of {', '.join(EVENT_KINDS)}.")
        with self._lock:
            self._events.append(Event(kind, detail))

    def press_button(self, button: str = "capture") -> None:
        """Queue a button press."""
        self.inject("button_pressed", button)

    def release_button(self, button: str = "capture") -> None:
        """Queue a button release."""
        self.inject("button_released", button)

    def click(self, button: str = "capture") -> None:
        """Queue a press followed by a release."""
        self.press_button(button)
        self.release_button(button)

    def unplug(self) -> None:
        """Simulate the microcontroller being unplugged."""
        self.connected = False
        self.inject("disconnected", "fake microcontroller unplugged")

    def plug(self) -> None:
        """Simulate the microcontroller being plugged back in."""
        self.connected = True
        self.inject("connected", "fake microcontroller")

    # -- UnitLink ---------------------------------------------------------------------------------------------------
    def poll_events(self) -> list[Event]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def _record(self, method: str, value: object, store: list) -> None:
        with self._lock:
            if self.closed:
                return
            self.calls.append((method, value))
            store.append(value)

    def show_status(self, status: str) -> None:
        check_status(status)
        self._record("show_status", status, self.statuses)

    def beep(self, pattern: str) -> None:
        check_beep(pattern)
        self._record("beep", pattern, self.beeps)

    def set_illumination(self, level: int) -> None:
        self._record("set_illumination", check_level(level), self.illumination)

    def flash(self, duration_ms: int) -> None:
        self._record("flash", check_flash(duration_ms), self.flashes)

    def set_fixation(self, target: int) -> None:
        self._record("set_fixation", check_fixation(target), self.fixations)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self.calls.append(("close", None))
        self.connected = False


def open_link(config: object = None) -> UnitLink:
    """Open the link described by ``config`` (see ``firmware_bridge.config``); never blocks or raises on hardware.

    Args:
        config: a mapping such as ``{"type": "serial", "url": "/dev/ttyACM0"}``, a config object, or None (no link).

    Returns:
        A ``NullLink``, ``FakeLink`` or ``SerialLink``. A serial port that is absent is not an error here: the
        ``SerialLink`` keeps trying to open it and reports ``error``/``connected`` events.

    Raises:
        firmware_bridge.config.LinkConfigError: the config itself is invalid (one sentence).
    """
    from firmware_bridge.config import FakeLinkConfig, SerialLinkConfig, parse_link_config

    cfg = parse_link_config(config)
    if isinstance(cfg, FakeLinkConfig):
        return FakeLink(connected=cfg.connected)
    if isinstance(cfg, SerialLinkConfig):
        from firmware_bridge.serial_link import SerialLink

        return SerialLink.from_config(cfg)
    return NullLink()

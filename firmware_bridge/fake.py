"""The two software implementations of ``UnitLink``: no microcontroller at all, and a recording fake.

* :class:`NullLink` (config ``type = "none"``): no microcontroller fitted; outputs are checked and ignored.
* :class:`FakeLink` (``type = "fake"``): records every call (tests, laptop demo); ``press_button()`` injects presses.
"""

from __future__ import annotations

import threading

from firmware_bridge.link import EVENT_KINDS, Event
from firmware_bridge.vocabulary import check_beep, check_fixation, check_flash, check_level, check_status


class NullLink:
    """No microcontroller configured: every output is ignored, no event ever arrives, ``connected`` is False."""

    connected = False

    @classmethod
    def from_config(cls, cfg: object = None) -> NullLink:
        """Build from a ``NoneLinkConfig`` (it has no settings)."""
        return cls()

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

    @classmethod
    def from_config(cls, cfg) -> FakeLink:
        """Build from a ``FakeLinkConfig``."""
        return cls(connected=cfg.connected)

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

"""The real microcontroller driver: pyserial port, background thread, non-blocking events, reconnection.

pyserial is imported here only. The kiosk's calls never block and never raise on link trouble: commands go into a
bounded queue that the background thread sends; problems become ``error`` / ``disconnected`` events and log lines.
LED status, illumination and fixation are *state*: the latest value is re-sent after every (re)connection, as a new
message. Flashes and beeps are one-shot: never replayed, so a flash is never fired twice.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from firmware_bridge import commands as C
from firmware_bridge import protocol as P
from firmware_bridge.config import LinkConfigError, network_url
from firmware_bridge.link import Event
from firmware_bridge.session import HostSession

LOG = logging.getLogger("firmware_bridge")
READ_TIMEOUT_S = 0.01  # longest the thread sleeps in read(); timers are that fine. Commands wake it at once.
EVENT_QUEUE_MAX = 1000  # events kept for a kiosk that stops polling (the oldest are dropped)
CLOSE_FLUSH_S = 0.5  # close() lets queued commands (the last beep, "LEDs off") go out for this long


def _ticks() -> int:
    return int(time.monotonic() * 1000) % P.TICKS_PERIOD


class SerialLink:
    """``UnitLink`` over a serial port (``/dev/ttyACM0``, or a local pyserial URL such as ``loop://``).

    Args:
        url: the port; a missing port is retried every ``reconnect_interval_s`` and reported, never raised.
        allow_network: accept ``socket://`` (the emulator's TCP mode in tests and benchmarks only); the unit's
            config never passes it, so no unit code path opens a network connection.
        baudrate: bits/s (USB CDC ignores it). Timings in seconds as in ``SerialLinkConfig``.
        queue_size: commands waiting to be sent; when full the oldest is dropped and reported.
        keep_outcomes: how many command outcomes ``outcome()`` remembers.
    """

    def __init__(self, url: str, *, baudrate: int = 115200, retry_timeout_s: float = 0.2, max_retries: int = 4,
                 handshake_timeout_s: float = 0.5, heartbeat_interval_s: float = 0.5, silence_timeout_s: float = 2.0,
                 reconnect_interval_s: float = 1.0, queue_size: int = 64, keep_outcomes: int = 1024,
                 allow_network: bool = False) -> None:
        if network_url(url) and not allow_network:
            raise LinkConfigError(f"The link url {url!r} is a network URL and the unit never opens network "
                                  "connections; give the microcontroller's serial port, e.g. /dev/ttyACM0.")
        self.url = url
        self.baudrate = baudrate
        self.connected = False
        self.firmware: str | None = None
        self._timing = dict(retry_ms=int(retry_timeout_s * 1000), max_retries=max_retries,
                            handshake_ms=int(handshake_timeout_s * 1000), heartbeat_ms=int(heartbeat_interval_s * 1000),
                            silence_ms=int(silence_timeout_s * 1000))
        self.reconnect_interval_s = reconnect_interval_s
        self.queue_size = queue_size
        self.keep_outcomes = keep_outcomes
        self.connections = 0  # successful handshakes so far
        self.dropped_events = 0
        self._lock = threading.Lock()
        self._events: collections.deque[Event] = collections.deque()
        self._commands: collections.deque[tuple[int, int, bytes]] = collections.deque()
        self._state: dict[int, bytes] = {}  # message type -> latest payload, re-sent after each handshake
        self._outcomes: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._next_ticket = 0
        self._stop = threading.Event()
        self._port = None
        self._session: HostSession | None = None
        self._thread = threading.Thread(target=self._run, name=f"SerialLink({url})", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg) -> SerialLink:
        """Build from a ``SerialLinkConfig``."""
        return cls(cfg.url, baudrate=cfg.baudrate, retry_timeout_s=cfg.retry_timeout_s, max_retries=cfg.max_retries,
                   handshake_timeout_s=cfg.handshake_timeout_s, heartbeat_interval_s=cfg.heartbeat_interval_s,
                   silence_timeout_s=cfg.silence_timeout_s, reconnect_interval_s=cfg.reconnect_interval_s,
                   queue_size=cfg.queue_size)

    # -- UnitLink --------------------------------------------------------------------------------------------------
    def poll_events(self) -> list[Event]:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def show_status(self, status: str) -> None:
        self.send_message(*C.status_message(status), state=True)

    def beep(self, pattern: str) -> None:
        self.send_message(*C.beep_message(pattern))

    def set_illumination(self, level: int) -> None:
        self.send_message(*C.illumination_message(level), state=True)

    def flash(self, duration_ms: int) -> None:
        self.send_message(*C.flash_message(duration_ms))

    def set_fixation(self, target: int) -> None:
        self.send_message(*C.fixation_message(target), state=True)

    def close(self, flush_s: float = CLOSE_FLUSH_S) -> None:
        """Stop the link; commands already queued get up to ``flush_s`` seconds to be confirmed first."""
        deadline = time.monotonic() + flush_s
        while self.connected and time.monotonic() < deadline and self._busy():
            time.sleep(0.002)
        self._stop.set()
        self._wake()
        self._thread.join(timeout=2.0)
        self.connected = False

    # -- lower level (tests, bench, diagnostics) ------------------------------------------------------------------
    def send_message(self, msg_type: int, payload: bytes, state: bool = False) -> int:
        """Queue a reliable message; never blocks. Returns a ticket for ``outcome()``.

        Args:
            msg_type: a ``protocol`` command type; payload: its bytes.
            state: remember it and send it again after each reconnection (LEDs, illumination, fixation).
        """
        with self._lock:
            self._next_ticket += 1
            ticket = self._next_ticket
            self._set_outcome(ticket, "pending")
            if state:
                self._state[msg_type] = payload
                # A newer LED/illumination/fixation value replaces one still waiting: only the latest matters.
                for old in [c for c in self._commands if c[1] == msg_type]:
                    self._commands.remove(old)
                    self._set_outcome(old[0], "superseded")
            if len(self._commands) >= self.queue_size:
                old = self._commands.popleft()
                self._fail(old[0], "dropped: command queue full (is the microcontroller slow?)")
            self._commands.append((ticket, msg_type, payload))
        self._wake()
        return ticket

    def outcome(self, ticket: int) -> str | None:
        """``pending``, ``delivered``, ``superseded`` (a newer state value replaced it before it was sent) or
        ``failed: <reason>`` for a recent ticket (None once forgotten)."""
        with self._lock:
            return self._outcomes.get(ticket)

    def stats(self) -> dict:
        """Counters for diagnostics and the bench: frames, resends, duplicates, heartbeat round trips (ms)."""
        session = self._session
        if session is None:
            return {"connections": self.connections}
        ch = session.channel
        return {"connections": self.connections, "good_frames": ch.decoder.good_frames,
                "bad_frames": ch.decoder.bad_frames + ch.decoder.overflows, "resends": ch.resends,
                "duplicates": ch.duplicates, "ping_rtts_ms": list(session.ping_rtts_ms)}

    def _busy(self) -> bool:
        session = self._session
        return bool(self._commands) or (session is not None and session.channel.pending() > 0)

    # -- internals (lock held by callers of _set_outcome/_fail) ---------------------------------------------------
    def _set_outcome(self, ticket: int, text: str) -> None:
        self._outcomes[ticket] = text
        while len(self._outcomes) > self.keep_outcomes:
            self._outcomes.popitem(last=False)

    def _fail(self, ticket: int | None, reason: str) -> None:
        if ticket is None:
            return
        self._set_outcome(ticket, "failed: " + reason)
        self._push(Event("error", f"A command to the microcontroller was not confirmed ({reason})."))

    def _push(self, event: Event) -> None:
        if len(self._events) >= EVENT_QUEUE_MAX:
            self._events.popleft()
            self.dropped_events += 1
        self._events.append(event)

    def _emit(self, kind: str, detail: str, number: int | None = None) -> None:
        level = logging.INFO if kind in ("connected", "disconnected") else logging.DEBUG
        if kind == "error":
            level = logging.WARNING
        LOG.log(level, "%s: %s %s", self.url, kind, detail)
        with self._lock:
            if kind == "connected":
                self.connected = True
                self.connections += 1
                self.firmware = detail
                # Restore LED status, illumination and fixation on a board that may have restarted.
                for msg_type, payload in self._state.items():
                    self._next_ticket += 1
                    self._set_outcome(self._next_ticket, "pending")
                    self._commands.appendleft((self._next_ticket, msg_type, payload))
            elif kind == "disconnected":
                self.connected = False
            self._push(Event(kind, detail, number=number))

    def _wake(self) -> None:
        port = self._port
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001 - the port is closing under us: the thread notices by itself
                pass

    def _collect(self, session: HostSession) -> None:
        ch = session.channel
        with self._lock:
            for ticket in ch.delivered:
                if ticket is not None:
                    self._set_outcome(ticket, "delivered")
            for ticket, reason in ch.failed:
                self._fail(ticket, reason)
        ch.delivered, ch.failed = [], []

    def _pump_commands(self, session: HostSession) -> None:
        # One command at a time goes to the stop-and-wait channel; the rest wait here, where a newer state value
        # can still replace an older one and the queue bound applies.
        with self._lock:
            while self._commands and session.channel.pending() == 0:
                ticket, msg_type, payload = self._commands.popleft()
                if not session.send(msg_type, payload, ticket):
                    # No error event: the link already reported why it is down; state is re-sent on connection.
                    self._set_outcome(ticket, "failed: not connected")

    def _run(self) -> None:
        import serial  # pyserial is imported by this adapter only

        failures = 0
        while not self._stop.is_set():
            try:
                port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_TIMEOUT_S,
                                             write_timeout=1.0)
            except (serial.SerialException, OSError, ValueError) as exc:
                failures += 1
                if failures == 1:
                    why = "it does not exist" if "No such file" in str(exc) else str(exc)
                    self._emit("error", f"Cannot open the microcontroller port {self.url} ({why}): check the USB "
                                        f"cable and the link url in the config; retrying every "
                                        f"{self.reconnect_interval_s:g} s.")
                self._drain_unconnected()
                self._stop.wait(self.reconnect_interval_s)
                continue
            failures = 0
            self._port = port
            session = HostSession(self._emit, _ticks(), port_name=self.url, **self._timing)
            self._session = session
            reason = "link closed"
            try:
                self._serve(port, session)
            except Exception as exc:  # noqa: BLE001 - SerialException, OSError, a write timeout: reconnect
                reason = f"port error: {exc}"
                LOG.warning("%s: %s", self.url, reason)
            finally:
                self._port = None
                try:
                    port.close()
                except Exception:  # noqa: BLE001 - closing a vanished device may fail; nothing to do about it
                    pass
            session.lose(reason)
            self._collect(session)
            self._drain_unconnected()
            if not self._stop.is_set():
                self._stop.wait(min(self.reconnect_interval_s, 0.05))
        self.connected = False

    def _drain_unconnected(self) -> None:
        with self._lock:
            while self._commands:
                self._set_outcome(self._commands.popleft()[0], "failed: not connected")

    def _serve(self, port, session: HostSession) -> None:
        while not self._stop.is_set():
            self._pump_commands(session)
            session.poll(_ticks())
            self._collect(session)
            out = session.take_output()
            if out:
                port.write(out)
            data = port.read(1)  # returns after READ_TIMEOUT_S, or at once on data or cancel_read()
            if data:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(waiting)
                session.feed(data, _ticks())
                self._collect(session)
                out = session.take_output()
                if out:
                    port.write(out)

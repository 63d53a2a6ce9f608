"""Host side of one connection: handshake, heartbeat, silence watchdog, and turning messages into events. No I/O.

``SerialLink`` owns the port and the thread; it feeds bytes in, calls ``poll`` from its loop and writes
``take_output()``. Everything here is driven by explicit millisecond ticks, so it is tested without a port.
"""

from __future__ import annotations

import logging
import random

from firmware_bridge import protocol as P
from firmware_bridge.commands import capability_names
from firmware_bridge.transport import Channel

LOG = logging.getLogger("firmware_bridge")
BUTTON_NAMES = ("capture",)  # button id -> name reported in Event.detail (firmware BUTTON_COUNT)
NOISE_REPORT_MS = 1000  # at most one "corrupt frames" error event per second


class FirmwareInfo:
    """What the board said in its HELLO_REPLY."""

    def __init__(self, payload: bytes) -> None:
        self.protocol = payload[0]
        self.version = f"{payload[3]}.{payload[4]}.{payload[5]}"
        self.capabilities = capability_names(P.get_u16(payload, 6))
        self.fixation_targets = payload[8]
        self.board = payload[9:].decode("utf-8", "replace")

    def __str__(self) -> str:
        return (f"{self.board} firmware {self.version}, protocol {self.protocol}, "
                f"capabilities {','.join(self.capabilities) or 'none'}")


class HostSession:
    """Protocol state for one open port. ``emit(kind, detail, number)`` receives the kiosk events.

    Args:
        emit: callback for events (``connected``, ``disconnected``, ``button_*``, ``error``).
        now: current tick in ms; the rest are the timings of ``SerialLinkConfig`` in ms.
    """

    def __init__(self, emit, now: int, retry_ms: int = 200, max_retries: int = 4, handshake_ms: int = 500,
                 heartbeat_ms: int = 500, silence_ms: int = 2000, port_name: str = "the serial port") -> None:
        self.emit = emit
        self.port_name = port_name
        self.channel = Channel(retry_ms, max_retries, queue_size=1 << 30)  # the link bounds its own queue
        self.handshake_ms, self.heartbeat_ms, self.silence_ms = handshake_ms, heartbeat_ms, silence_ms
        self.connected = False
        self.info: FirmwareInfo | None = None
        self.session_id = 0
        self.ping_rtts_ms: list[int] = []
        self._last_rx = now
        self._last_hello: int | None = None
        self._last_ping = now
        self._ping_token = 0
        self._ping_sent: dict[int, int] = {}
        self._silence_reported = False
        self._version_reported = False
        self._echo_reported = False
        self._last_event_no: int | None = None
        self._noise = 0
        self._noise_since = now
        self._new_session()

    # -- driven by SerialLink ----------------------------------------------------------------------------------
    def feed(self, data: bytes, now: int) -> None:
        """Bytes from the port."""
        good_before = self.channel.decoder.good_frames
        self._noise += self.channel.receive(data, now, lambda t, s, p: self._on_message(t, s, p, now))
        if self.channel.decoder.good_frames != good_before:
            self._last_rx = now
            self._silence_reported = False

    def poll(self, now: int) -> None:
        """Timers: HELLO resends, PING, silence watchdog, command resends, noise reports."""
        hello_due = self._last_hello is None or P.ticks_diff(now, self._last_hello) >= self.handshake_ms
        if not self.connected and hello_due:
            self._last_hello = now
            self.channel.send_unreliable(P.HELLO, bytes((P.PROTOCOL_VERSION,)) + P.u16(self.session_id))
        if self.connected and P.ticks_diff(now, self._last_ping) >= self.heartbeat_ms:
            self._last_ping = now
            self._ping_token = self._ping_token % 0xFFFF + 1
            self._ping_sent = {self._ping_token: now}
            self.channel.send_unreliable(P.PING, P.u16(self._ping_token))
        if P.ticks_diff(now, self._last_rx) > self.silence_ms and not self._silence_reported:
            self._silence_reported = True
            self.emit("error", f"The microcontroller on {self.port_name} has not answered for "
                               f"{self.silence_ms / 1000:.1f} s: check its cable and that the firmware is flashed.")
            self.lose("microcontroller silent")
        if self._noise and P.ticks_diff(now, self._noise_since) >= NOISE_REPORT_MS:
            self.emit("error", f"{self._noise} corrupt frame(s) from the microcontroller were dropped: "
                               f"check the cable if this repeats.")
            self._noise, self._noise_since = 0, now
        self.channel.poll(now)

    def lose(self, reason: str) -> None:
        """The session is gone (silence, board restart, port closed): fail what is in flight, handshake again."""
        if self.connected:
            self.connected = False
            self.emit("disconnected", f"Microcontroller on {self.port_name} lost ({reason}).")
        self.channel.reset(reason)
        self._new_session()

    def send(self, msg_type: int, payload: bytes, tag: object) -> bool:
        """Queue a reliable command; False when there is no session (the caller reports it)."""
        if not self.connected:
            return False
        return self.channel.send(msg_type, payload, tag)

    def take_output(self) -> bytes:
        """Bytes to write to the port now."""
        return self.channel.take_output()

    # -- messages ------------------------------------------------------------------------------------------------
    def _new_session(self) -> None:
        self.session_id = random.randint(1, 0xFFFF)
        self._last_hello = None
        self._last_event_no = None

    def _on_message(self, msg_type: int, seq: int, payload: bytes, now: int) -> int:
        try:
            if msg_type == P.HELLO_REPLY:
                self._on_hello_reply(payload, now)
            elif msg_type == P.PONG:
                sent = self._ping_sent.pop(P.get_u16(payload, 0), None)
                if sent is not None:
                    self.ping_rtts_ms = [*self.ping_rtts_ms, P.ticks_diff(now, sent)][-100:]
            elif msg_type == P.NAK:
                if payload and payload[0] == P.NAK_NO_SESSION and self.connected:
                    self.lose("the microcontroller restarted")
            elif msg_type == P.BUTTON:
                self._on_button(payload)
            elif msg_type in (P.HELLO, P.PING) and not self._echo_reported:
                self._echo_reported = True  # only a host sends these: the line hands our own bytes back
                self.emit("error", f"{self.port_name} echoes our own messages (a loopback or a terminal in echo "
                                   f"mode), so it is not the microcontroller: check the link url.")
            elif msg_type == P.ERROR_REPORT:
                text = payload[1:].decode("utf-8", "replace")
                self.emit("error", f"The microcontroller reports error {payload[0]}: {text}.")
            elif msg_type in P.RELIABLE_TYPES:
                return P.NAK_UNKNOWN_TYPE  # a command type only the board understands
        except IndexError:  # a payload shorter than its type needs: CRC was fine, so the sender is wrong
            LOG.warning("short %s payload from the microcontroller", P.TYPE_NAMES.get(msg_type, msg_type))
            return P.NAK_BAD_PAYLOAD
        return 0

    def _on_hello_reply(self, payload: bytes, now: int) -> None:
        if self.connected or P.get_u16(payload, 1) != self.session_id:
            return  # a late reply to an earlier HELLO
        info = FirmwareInfo(payload)
        if info.protocol != P.PROTOCOL_VERSION:
            if not self._version_reported:
                self._version_reported = True
                self.emit("error", f"The microcontroller speaks protocol {info.protocol} but this unit needs "
                                   f"{P.PROTOCOL_VERSION}: flash the firmware shipped with this software "
                                   f"(docs/firmware_bridge.md).")
            self._last_hello = P.ticks_add(now, 10 * self.handshake_ms)  # ask again rarely
            return
        self.info = info
        self.connected = True
        self._last_ping = now
        self.emit("connected", str(info))

    def _on_button(self, payload: bytes) -> None:
        button, pressed, number = payload[0], payload[1], P.get_u16(payload, 2)
        if self._last_event_no is not None:
            lost = (number - self._last_event_no - 1) & 0xFFFF
            if lost:
                self.emit("error", f"{lost} button event(s) from the microcontroller were lost on the line.")
        self._last_event_no = number
        name = BUTTON_NAMES[button] if button < len(BUTTON_NAMES) else f"button {button}"
        self.emit("button_pressed" if pressed else "button_released", name, number)

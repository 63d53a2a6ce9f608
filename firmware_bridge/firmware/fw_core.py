"""The firmware's behaviour, independent of the board: the same class runs on the Pico and in the emulator.

``main.py`` (on the board) wraps real pins in a ``board`` object; ``firmware_bridge.emulator`` wraps fake pins
that record every change. Keep this file in the MicroPython subset (no typing, dataclasses, f-strings).

A ``board`` provides: ``ticks_ms()``, ``buttons()`` (bit mask of pressed buttons, raw, undebounced),
``leds(mask)`` (LED_GREEN/AMBER/RED bits lit), ``buzzer(freq_hz)`` (0 = silent), ``illumination(level)`` (0..255),
``flash(level, duration_ms)`` (one pulse, timed by the board: a hardware timer on the Pico, so the pulse length
does not depend on main-loop jitter) and ``fixation(target)`` (0 = off, 1..protocol.FIXATION_TARGETS).
"""

try:
    from firmware_bridge import protocol as P
    from firmware_bridge import transport as T
except ImportError:  # on the board the modules sit side by side
    import protocol as P
    import transport as T

FIRMWARE_VERSION = (1, 0, 0)
BOARD_NAME = "pico-dr-unit"
CAPABILITIES = P.CAP_BUTTON | P.CAP_LEDS | P.CAP_BUZZER | P.CAP_ILLUMINATION | P.CAP_FLASH | P.CAP_FIXATION
BUTTON_COUNT = 1  # bit 0: the capture button
DEBOUNCE_MS = 20  # a contact must be stable this long (typical tactile switch bounce is < 10 ms)
HOST_TIMEOUT_MS = 3000  # no frame from the host for this long: drop the session and show "no host"
NO_HOST_BLINK_MS = 500  # amber blink while no host is talking to us
BEEP_FREQ_RANGE = (100, 10000)  # Hz the piezo buzzer can usefully play
EVENT_QUEUE = 16  # button events waiting for the host (RAM on the board is small)
STUCK_BUTTON_MS = 10000  # a press held this long is reported as a possibly stuck button
ERROR_BUTTON_STUCK = 1  # ERROR_REPORT codes


class FirmwareCore:
    """The microcontroller state machine: protocol session, outputs, button debounce, host watchdog."""

    def __init__(self, board, retry_ms=T.DEFAULT_RETRY_MS, max_retries=T.DEFAULT_MAX_RETRIES,
                 queue_size=EVENT_QUEUE):
        self.board = board
        self.channel = T.Channel(retry_ms, max_retries, queue_size)
        self.session = None  # host session id, None until a HELLO
        self.started = board.ticks_ms()
        self.last_rx = self.started
        self.event_no = 0
        self.events_lost = 0
        self.failed_events = []  # (event number, reason); trimmed by the owner (emulator) as it likes
        self._stable = 0
        self._raw = 0
        self._raw_since = self.started
        self._led_on = 0
        self._led_blink = 0
        self._led_period = 0
        self._led_shown = -1
        self._beep = []  # remaining (freq, duration ms) steps
        self._beep_until = self.started
        self._stuck_reported = 0
        self._show_no_host()

    # -- I/O entry points used by main.py / the emulator ----------------------------------------------------
    def feed(self, data):
        """Handle bytes received from the host."""
        now = self.board.ticks_ms()
        self.channel.receive(data, now, self._on_message)

    def tick(self):
        """Run timers: debounce, blink, beep, flash, resends, host watchdog. Call every few ms."""
        now = self.board.ticks_ms()
        self._scan_buttons(now)
        self._run_outputs(now)
        if self.session is not None and P.ticks_diff(now, self.last_rx) > HOST_TIMEOUT_MS:
            self.session = None
            self.channel.reset("host silent")
            self._show_no_host()
        self.channel.poll(now)
        # The host spots lost events from gaps in event numbers; here we only count them (for tests and debug).
        self.events_lost += len(self.channel.failed)
        self.failed_events.extend(self.channel.failed)
        if len(self.failed_events) > 64:  # bounded on the board; the emulator drains it
            self.failed_events = self.failed_events[-64:]
        self.channel.failed = []
        self.channel.delivered = []

    def take_output(self):
        """Bytes to send to the host now."""
        return self.channel.take_output()

    def queue_button(self, button, pressed):
        """Report a (debounced) button change to the host; events are dropped while no host is connected."""
        if self.session is None:
            return False
        self.event_no = (self.event_no + 1) & 0xFFFF
        payload = bytes((button, 1 if pressed else 0)) + P.u16(self.event_no) + P.u32(self.board.ticks_ms())
        return self.channel.send(P.BUTTON, payload, self.event_no)

    # -- protocol ---------------------------------------------------------------------------------------------
    def _on_message(self, msg_type, seq, payload):
        now = self.board.ticks_ms()
        self.last_rx = now
        if msg_type == P.HELLO:
            return self._on_hello(payload)
        if msg_type == P.PING:
            if self.session is None:
                self.channel.send_unreliable(P.NAK, bytes((P.NAK_NO_SESSION,)))
            elif len(payload) == 2:
                held = self._stable
                uptime = P.ticks_diff(now, self.started) & 0xFFFFFFFF
                self.channel.send_unreliable(P.PONG, payload + P.u32(uptime) + bytes((held,)))
            return 0
        if msg_type not in P.RELIABLE_TYPES:
            return 0  # NAK or a type meant for the host: nothing to do
        if self.session is None:
            return P.NAK_NO_SESSION
        try:
            return self._on_command(msg_type, payload, now)
        except IndexError:
            return P.NAK_BAD_PAYLOAD

    def _on_hello(self, payload):
        if len(payload) < 3:
            return 0
        session = P.get_u16(payload, 1)
        if session != self.session:  # a repeated HELLO of the current session must not reset sequence numbers
            self.session = session
            self.channel.reset("new session")
            self._set_leds(0, 0, 0)
        major, minor, patch = FIRMWARE_VERSION
        reply = (bytes((P.PROTOCOL_VERSION,)) + P.u16(session) + bytes((major, minor, patch)) + P.u16(CAPABILITIES)
                 + bytes((P.FIXATION_TARGETS,)) + BOARD_NAME.encode())
        self.channel.send_unreliable(P.HELLO_REPLY, reply)
        return 0

    def _on_command(self, msg_type, payload, now):
        board = self.board
        if msg_type == P.SET_LEDS:
            if len(payload) != 4:
                return P.NAK_BAD_PAYLOAD
            self._set_leds(payload[0] & 7, payload[1] & 7, P.get_u16(payload, 2))
        elif msg_type == P.BEEP:
            freq = P.get_u16(payload, 0)
            steps = payload[2:]
            if len(steps) < 2 or len(steps) % 2 or len(steps) > 16:
                return P.NAK_BAD_PAYLOAD
            if not BEEP_FREQ_RANGE[0] <= freq <= BEEP_FREQ_RANGE[1]:
                return P.NAK_BAD_PAYLOAD
            self._beep = []
            for i in range(0, len(steps), 2):
                self._beep.append((freq, steps[i] * 10))
                self._beep.append((0, steps[i + 1] * 10))
            self._beep_until = now
        elif msg_type == P.SET_ILLUMINATION:
            if len(payload) != 1:
                return P.NAK_BAD_PAYLOAD
            board.illumination(payload[0])
        elif msg_type == P.FLASH:
            duration = P.get_u16(payload, 0)
            if len(payload) != 3 or not 1 <= duration <= P.FLASH_MAX_MS or not payload[2]:
                return P.NAK_BAD_PAYLOAD
            board.flash(payload[2], duration)
        elif msg_type == P.SET_FIXATION:
            if len(payload) != 1 or payload[0] > P.FIXATION_TARGETS:
                return P.NAK_BAD_PAYLOAD
            board.fixation(payload[0])
        else:
            return P.NAK_UNKNOWN_TYPE  # a reliable type for the host, sent to us by mistake
        return 0

    # -- outputs and inputs ----------------------------------------------------------------------------------
    def _set_leds(self, on, blink, period):
        self._led_on, self._led_blink, self._led_period = on, blink, max(period, 20)
        self._led_shown = -1

    def _show_no_host(self):
        self._set_leds(0, P.LED_AMBER, NO_HOST_BLINK_MS)

    def _run_outputs(self, now):
        phase = (P.ticks_diff(now, self.started) // self._led_period) & 1
        mask = self._led_on | (self._led_blink if phase == 0 else 0)
        if mask != self._led_shown:
            self.board.leds(mask)
            self._led_shown = mask
        if self._beep and P.ticks_diff(now, self._beep_until) >= 0:
            freq, duration = self._beep.pop(0)
            self.board.buzzer(freq)
            self._beep_until = P.ticks_add(now, duration)

    def _scan_buttons(self, now):
        raw = self.board.buttons()
        if raw != self._raw:
            self._raw = raw
            self._raw_since = now
        elif raw != self._stable and P.ticks_diff(now, self._raw_since) >= DEBOUNCE_MS:
            changed = raw ^ self._stable
            self._stable = raw
            for button in range(BUTTON_COUNT):
                if changed & (1 << button):
                    self.queue_button(button, raw & (1 << button))
            self._stuck_reported &= raw
        stuck = self._stable & ~self._stuck_reported
        if stuck and P.ticks_diff(now, self._raw_since) >= STUCK_BUTTON_MS and self.session is not None:
            self._stuck_reported |= stuck
            text = "button held for %d s: check it is not stuck" % (STUCK_BUTTON_MS // 1000)
            self.channel.send(P.ERROR_REPORT, bytes((ERROR_BUTTON_STUCK,)) + text.encode(), None)

"""Wire format of the unit <-> microcontroller link: COBS framing, CRC-16/CCITT-FALSE, message types. No I/O.

This file is copied unchanged onto the board (``mpremote cp firmware_bridge/protocol.py :``) and runs on
MicroPython as well as CPython, so it uses only the common subset: no typing, dataclasses, enum or f-strings.

On the wire every frame is ``0x00 COBS(type seq len payload crc_hi crc_lo) 0x00``:

* ``type``  u8   message type (table below and docs/firmware_bridge.md),
* ``seq``   u8   1..255 for reliable messages (ACKed, resent, de-duplicated), 0 for unreliable ones; an ACK/NAK
  carries the sequence number it answers,
* ``len``   u8   payload length (0..MAX_PAYLOAD), a second check beside the CRC against dropped bytes,
* ``crc``   u16  CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection) over type..payload, big-endian.

The leading 0x00 ends whatever garbage or truncated frame the receiver was holding, so one bad frame never
spoils the next.
"""

PROTOCOL_VERSION = 1  # bumped on any incompatible change; the handshake refuses a mismatch
MAX_PAYLOAD = 64  # bytes; keeps a frame inside one 64-byte USB full-speed packet plus a few bytes
HEADER_LEN = 3
CRC_LEN = 2
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + CRC_LEN
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1  # COBS adds one byte per 254 plus one
TICKS_PERIOD = 1 << 30  # millisecond clock wraps here (MicroPython time.ticks_ms); host ticks are masked to match

# Unreliable messages (seq 0, never ACKed).
HELLO = 0x01  # host -> mcu: protocol u8, session u16
HELLO_REPLY = 0x02  # mcu -> host: protocol u8, session u16, fw major u8, minor u8, patch u8, caps u16, targets u8, name
PING = 0x03  # host -> mcu: token u16
PONG = 0x04  # mcu -> host: token u16, uptime ms u32, buttons held u8
ACK = 0x05  # either way: seq = the seq acknowledged, no payload
NAK = 0x06  # either way: seq = the seq refused (0 = a corrupt frame arrived), reason u8
# Reliable host -> mcu commands.
SET_LEDS = 0x10  # on mask u8, blink mask u8, blink period ms u16 (bit 0 green, 1 amber, 2 red)
BEEP = 0x11  # frequency Hz u16, then 1..8 pairs (on, off) in units of 10 ms
SET_ILLUMINATION = 0x12  # level u8 (PWM duty 0..255)
FLASH = 0x13  # duration ms u16, level u8
SET_FIXATION = 0x14  # target u8 (0 = off)
# Reliable mcu -> host reports.
BUTTON = 0x20  # button id u8, pressed u8, event number u16, mcu time ms u32
ERROR_REPORT = 0x21  # code u8, text (UTF-8)

RELIABLE_TYPES = (SET_LEDS, BEEP, SET_ILLUMINATION, FLASH, SET_FIXATION, BUTTON, ERROR_REPORT)
TYPE_NAMES = {HELLO: "HELLO", HELLO_REPLY: "HELLO_REPLY", PING: "PING", PONG: "PONG", ACK: "ACK", NAK: "NAK",
              SET_LEDS: "SET_LEDS", BEEP: "BEEP", SET_ILLUMINATION: "SET_ILLUMINATION", FLASH: "FLASH",
              SET_FIXATION: "SET_FIXATION", BUTTON: "BUTTON", ERROR_REPORT: "ERROR_REPORT"}

# NAK reasons.
NAK_CORRUPT = 1  # a frame failed COBS/length/CRC checks: resend what is outstanding now
NAK_UNKNOWN_TYPE = 2  # the receiver does not know this message type (older firmware?)
NAK_BAD_PAYLOAD = 3  # wrong length or out-of-range value
NAK_NO_SESSION = 4  # no handshake yet (the board rebooted): handshake again
NAK_REASONS = {NAK_CORRUPT: "corrupt frame", NAK_UNKNOWN_TYPE: "unknown message type",
               NAK_BAD_PAYLOAD: "bad payload", NAK_NO_SESSION: "no session (board restarted?)"}

# Capability bits in HELLO_REPLY.
CAP_BUTTON = 0x01
CAP_LEDS = 0x02
CAP_BUZZER = 0x04
CAP_ILLUMINATION = 0x08
CAP_FLASH = 0x10
CAP_FIXATION = 0x20
CAP_NAMES = ((CAP_BUTTON, "button"), (CAP_LEDS, "leds"), (CAP_BUZZER, "buzzer"),
             (CAP_ILLUMINATION, "illumination"), (CAP_FLASH, "flash"), (CAP_FIXATION, "fixation"))

# LED bits in SET_LEDS.
LED_GREEN = 0x01
LED_AMBER = 0x02
LED_RED = 0x04

# Limits of the command payloads: the board refuses values outside them, and the host checks the same values
# before sending (firmware_bridge.vocabulary), so a bad request is one sentence on the host, not a NAK.
ILLUMINATION_MAX = 255  # 8-bit PWM duty of SET_ILLUMINATION and of the FLASH level
FLASH_MAX_MS = 2000  # longest FLASH pulse (eye safety: fundus flashes are ~1-200 ms)
FIXATION_TARGETS = 5  # fixation LEDs on the reference board (centre, up, down, left, right); 0 switches them off


def _make_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _make_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (check value of b"123456789" is 0x29B1); returns an int 0..65535."""
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def cobs_encode(data):
    """COBS-encode ``data`` (bytes): the result contains no 0x00 byte and is at most len+len//254+1 long."""
    out = bytearray(b"\x00")
    code_pos = 0
    code = 1
    for b in data:
        if b:
            out.append(b)
            code += 1
        if not b or code == 0xFF:
            out[code_pos] = code
            code_pos = len(out)
            out.append(0)
            code = 1
    out[code_pos] = code
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (no 0x00 inside); returns bytes, or None when the block is malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            return None
        end = i + code
        if end > n:
            return None  # truncated block
        out.extend(data[i + 1:end])
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(msg_type, seq, payload=b""):
    """Build the wire bytes of one message: delimiter, COBS(header payload crc), delimiter.

    Args:
        msg_type: message type 0..255; seq: 0..255; payload: bytes of at most MAX_PAYLOAD.
    Returns:
        bytes ready to write to the port.
    """
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload too long")
    body = bytearray((msg_type & 0xFF, seq & 0xFF, len(payload)))
    body.extend(payload)
    crc = crc16(body)
    body.append(crc >> 8)
    body.append(crc & 0xFF)
    return b"\x00" + cobs_encode(body) + b"\x00"


def parse_frame(block):
    """Check one delimited block; returns (type, seq, payload) or None (bad COBS, length or CRC)."""
    if len(block) < HEADER_LEN + CRC_LEN or len(block) > MAX_ENCODED:
        return None
    body = cobs_decode(block)
    if body is None or len(body) < HEADER_LEN + CRC_LEN or body[2] != len(body) - HEADER_LEN - CRC_LEN:
        return None
    if crc16(body[:-2]) != (body[-2] << 8) | body[-1]:
        return None
    return body[0], body[1], body[HEADER_LEN:-CRC_LEN]


class Decoder:
    """Splits a byte stream into checked frames; survives any input (garbage, truncation, overflow).

    ``feed(data)`` returns a list of ``(type, seq, payload)`` for every good frame; bad blocks are counted in
    ``bad_frames`` (COBS, length or CRC failure) and ``overflows`` (no delimiter within MAX_ENCODED bytes).
    """

    def __init__(self):
        self._buf = bytearray()
        self._skipping = False  # inside an over-long block: discard until the next delimiter
        self.good_frames = 0
        self.bad_frames = 0
        self.overflows = 0

    def reset(self):
        """Forget any partial frame (after reopening the port)."""
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data):
        """Consume ``data`` (bytes-like) and return the list of good frames completed by it."""
        data = bytes(data)
        frames = []
        start = 0
        n = len(data)
        while start <= n:
            end = data.find(b"\x00", start)
            if end < 0:
                if not self._skipping:
                    self._buf.extend(data[start:])
                    if len(self._buf) > MAX_ENCODED:
                        self._buf = bytearray()
                        self._skipping = True
                        self.overflows += 1
                break
            if self._skipping:
                self._skipping = False
                self._buf = bytearray()
            else:
                self._buf.extend(data[start:end])
                if self._buf:
                    frame = parse_frame(bytes(self._buf))
                    self._buf = bytearray()
                    if frame is None:
                        self.bad_frames += 1
                    else:
                        self.good_frames += 1
                        frames.append(frame)
            start = end + 1
        return frames


def ticks_diff(a, b):
    """Signed difference a - b of two millisecond tick values that wrap at TICKS_PERIOD."""
    return ((a - b + TICKS_PERIOD // 2) % TICKS_PERIOD) - TICKS_PERIOD // 2


def ticks_add(a, delta):
    """Tick value ``delta`` ms after ``a``."""
    return (a + delta) % TICKS_PERIOD


def u16(value):
    """Big-endian two bytes of an int 0..65535."""
    return bytes(((value >> 8) & 0xFF, value & 0xFF))


def u32(value):
    """Big-endian four bytes of an int 0..2**32-1."""
    return bytes(((value >> 24) & 0xFF, (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF))


def get_u16(data, offset):
    """Read a big-endian u16 at ``offset``."""
    return (data[offset] << 8) | data[offset + 1]


def get_u32(data, offset):
    """Read a big-endian u32 at ``offset``."""
    return (get_u16(data, offset) << 16) | get_u16(data, offset + 2)

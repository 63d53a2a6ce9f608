"""What each kiosk request means on the wire: status -> LED pattern, beep name -> tone sequence. Pure functions.

The firmware stays generic (it lights LED masks and plays tone lists); the policy of which colour means what lives
here, on the host, where it can change without reflashing the board.
"""

from __future__ import annotations

from firmware_bridge import protocol as P
from firmware_bridge.vocabulary import check_beep, check_fixation, check_flash, check_level, check_status

FLASH_LEVEL = P.ILLUMINATION_MAX  # full drive for the capture flash; the LED driver's resistor sets the real current

# status -> (LEDs steadily on, LEDs blinking, blink period ms). Verdict colours follow screening practice:
# red = refer, green = no referable DR, amber = ungradable (retake / refer).
STATUS_LEDS = {
    "ready": (0, P.LED_GREEN, 1000),  # slow green blink: waiting for the next patient
    "busy": (0, P.LED_AMBER, 250),  # fast amber blink: capturing / analysing
    "referable": (P.LED_RED, 0, 1000),
    "non_referable": (P.LED_GREEN, 0, 1000),
    "ungradable": (P.LED_AMBER, 0, 1000),
    "error": (0, P.LED_RED, 200),  # fast red blink: the unit needs attention
}

# pattern -> (frequency Hz, [(on 10 ms units, off 10 ms units), ...]); piezo resonance is ~2-4 kHz.
BEEP_TONES = {
    "ok": (2700, [(10, 0)]),  # one short chirp
    "attention": (2700, [(15, 10), (15, 0)]),  # two chirps
    "error": (1000, [(40, 15), (40, 15), (40, 0)]),  # three long low tones
}


def status_message(status: str) -> tuple[int, bytes]:
    """SET_LEDS message for a unit status.

    Args:
        status: one of ``firmware_bridge.vocabulary.STATUSES``.
    Returns:
        (message type, payload).
    """
    check_status(status)
    on, blink, period_ms = STATUS_LEDS[status]
    return P.SET_LEDS, bytes((on, blink)) + P.u16(period_ms)


def beep_message(pattern: str) -> tuple[int, bytes]:
    """BEEP message for a named pattern (``ok``, ``attention``, ``error``)."""
    check_beep(pattern)
    freq, steps = BEEP_TONES[pattern]
    return P.BEEP, P.u16(freq) + bytes(b for step in steps for b in step)


def illumination_message(level: int) -> tuple[int, bytes]:
    """SET_ILLUMINATION message; ``level`` 0..``protocol.ILLUMINATION_MAX`` (PWM duty)."""
    return P.SET_ILLUMINATION, bytes((check_level(level),))


def flash_message(duration_ms: int, level: int = FLASH_LEVEL) -> tuple[int, bytes]:
    """FLASH message: one pulse of ``duration_ms`` (1..``protocol.FLASH_MAX_MS`` ms) at ``level`` (1..255)."""
    check_flash(duration_ms)
    if not check_level(level) >= 1:
        raise ValueError(f"Flash level {level!r} is out of range: use an integer from 1 to {P.ILLUMINATION_MAX}.")
    return P.FLASH, P.u16(duration_ms) + bytes((level,))


def fixation_message(target: int) -> tuple[int, bytes]:
    """SET_FIXATION message; ``target`` 0 (off) or 1..5."""
    return P.SET_FIXATION, bytes((check_fixation(target),))


def capability_names(mask: int) -> list[str]:
    """Names of the capability bits set in a HELLO_REPLY mask."""
    return [name for bit, name in P.CAP_NAMES if mask & bit]

"""The words the kiosk may send to the microcontroller, and their checks: unit statuses, beep patterns, and the
ranges of illumination, flash and fixation (the limits themselves live in :mod:`firmware_bridge.protocol`, which
the firmware shares). Every implementation of ``UnitLink`` checks its arguments here, so a bad request is the same
one-sentence ``ValueError`` whether a microcontroller is fitted or not.
"""

from __future__ import annotations

from firmware_bridge.protocol import FIXATION_TARGETS, FLASH_MAX_MS, ILLUMINATION_MAX

# Unit states shown on the status LEDs (the LED pattern per status lives in firmware_bridge.commands).
STATUSES = ("ready", "busy", "referable", "non_referable", "ungradable", "error")
# Buzzer patterns (tone sequences live in firmware_bridge.commands).
BEEP_PATTERNS = ("ok", "attention", "error")


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

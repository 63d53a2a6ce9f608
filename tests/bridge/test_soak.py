"""Done-when tests over a real pty: 10,000 messages each way through a noisy line, and unplugging mid-stream."""

from __future__ import annotations

import time

import pytest

from firmware_bridge.commands import flash_message
from firmware_bridge.emulator import Emulator, LineNoise
from firmware_bridge.serial_link import SerialLink

SOAK_MESSAGES = 10_000
# Per-byte rates: with ~12-byte frames about 5 % of frames are hit, plus the ACKs that answer them.
CORRUPT_RATE = 0.002
DROP_RATE = 0.002


def wait_for(predicate, timeout, poll=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if poll:
            poll()
        if predicate():
            return True
        time.sleep(0.005)
    return False


def flash_id(level: int, duration: int) -> int:
    return (level - 1) * 2000 + duration - 1


def flash_args(i: int) -> tuple[int, int]:
    """A unique (duration ms, level) for message i, so every FLASH is identifiable at the board."""
    return i % 2000 + 1, i // 2000 + 1


@pytest.mark.slow
def test_soak_10k_each_way_with_corruption_and_drops_exactly_once_or_failed():
    noise_in, noise_out = LineNoise(CORRUPT_RATE, DROP_RATE, seed=11), LineNoise(CORRUPT_RATE, DROP_RATE, seed=12)
    with Emulator(noise_in=noise_in, noise_out=noise_out, retry_ms=50, max_retries=8) as emu:
        link = SerialLink(emu.port, retry_timeout_s=0.05, max_retries=8, handshake_timeout_s=0.05,
                          heartbeat_interval_s=0.2, silence_timeout_s=3.0, queue_size=SOAK_MESSAGES,
                          keep_outcomes=SOAK_MESSAGES)
        events = []
        try:
            assert wait_for(lambda: link.connected, 10, lambda: events.extend(link.poll_events()))
            t0 = time.monotonic()
            tickets = [link.send_message(*flash_message(*flash_args(i))) for i in range(SOAK_MESSAGES)]
            emu.queue_events(SOAK_MESSAGES)
            done = wait_for(lambda: emu.events_pending() == 0 and
                            all(link.outcome(t) != "pending" for t in tickets[-50:]) and
                            all(link.outcome(t) != "pending" for t in tickets),
                            100, lambda: events.extend(link.poll_events()))
            time.sleep(0.2)
            events.extend(link.poll_events())
            assert done, "the soak did not finish in time"
            outcomes = [link.outcome(t) for t in tickets]
            stats = link.stats()
            print(f"soak: {time.monotonic() - t0:.1f} s, host {stats}, board resends {emu.core.channel.resends}, "
                  f"noise in {noise_in.corrupted}/{noise_in.dropped}, out {noise_out.corrupted}/{noise_out.dropped}")
        finally:
            link.close()
    assert link.connections == 1 and "disconnected" not in [e.kind for e in events]

    # Host -> board: every FLASH delivered at most once; each one either arrived or was reported failed.
    received = [flash_id(level, duration) for b in emu.boards for level, duration in b.flashes]
    assert len(received) == len(set(received)), "a FLASH was fired twice"
    delivered = {i for i, o in enumerate(outcomes) if o == "delivered"}
    failed = {i for i, o in enumerate(outcomes) if o.startswith("failed")}
    assert delivered | failed == set(range(SOAK_MESSAGES))
    assert delivered <= set(received)  # "delivered" is only said of what really arrived
    assert set(received) | failed == set(range(SOAK_MESSAGES))
    assert len(failed) < SOAK_MESSAGES // 100

    # Board -> host: every button event arrived once, or the firmware recorded it as failed.
    numbers = [e.number for e in events if e.kind.startswith("button_")]
    assert len(numbers) == len(set(numbers)), "a button event was delivered twice"
    lost_at_board = {n for n, _ in emu.failed_events if n is not None}
    assert set(numbers) | lost_at_board == set(range(1, SOAK_MESSAGES + 1))
    assert len(lost_at_board) < SOAK_MESSAGES // 100
    print(f"soak: host->board failed {len(failed)}, board->host failed {len(lost_at_board)}")

    # The line really was noisy, and the errors were reported to the kiosk.
    assert noise_in.corrupted > 100 and noise_in.dropped > 100 and noise_out.corrupted > 100
    assert any("corrupt frame(s)" in e.detail for e in events if e.kind == "error")


@pytest.mark.slow
def test_unplug_mid_stream_reconnects_handshakes_again_and_sends_nothing_twice():
    with Emulator(retry_ms=30) as emu:
        link = SerialLink(emu.port, retry_timeout_s=0.03, handshake_timeout_s=0.05, heartbeat_interval_s=0.05,
                          silence_timeout_s=3.0, reconnect_interval_s=0.05)
        events = []
        try:
            assert wait_for(lambda: link.connected, 5, lambda: events.extend(link.poll_events()))
            link.show_status("busy")
            tickets = []
            for duration in range(1, 301):
                if duration == 100:
                    # Messages 1..90 settle first, so whatever the machine's load, 91..99 are the ones in flight.
                    assert wait_for(lambda: all(link.outcome(t) != "pending" for t in tickets[:90]), 10)
                    emu.unplug()
                if duration == 101:
                    assert wait_for(lambda: not link.connected, 5, lambda: events.extend(link.poll_events()))
                if duration == 150:
                    emu.replug(reboot=True)
                    assert wait_for(lambda: link.connected, 5, lambda: events.extend(link.poll_events()))
                tickets.append(link.send_message(*flash_message(duration)))
                time.sleep(0.002)
            assert wait_for(lambda: all(link.outcome(t) != "pending" for t in tickets), 10,
                            lambda: events.extend(link.poll_events()))
            events.extend(link.poll_events())
            outcomes = [link.outcome(t) for t in tickets]
        finally:
            link.close()
    kinds = [e.kind for e in events]
    assert kinds.count("connected") == 2 and kinds.count("disconnected") == 1
    assert kinds.index("disconnected") < len(kinds) - 1 - kinds[::-1].index("connected")
    assert link.connections == 2 and emu.sessions == 2 and len(emu.cores) == 2
    assert emu.cores[1].session is not None  # the rebooted board was handshaken with again

    fired = [duration for b in emu.boards for _, duration in b.flashes]
    assert len(fired) == len(set(fired)), "a FLASH was fired twice across the unplug"
    delivered = {i + 1 for i, o in enumerate(outcomes) if o == "delivered"}
    failed = {i + 1 for i, o in enumerate(outcomes) if o.startswith("failed")}
    assert delivered | failed == set(range(1, 301)) and delivered <= set(fired)
    assert set(range(1, 91)) <= delivered  # before the unplug
    assert set(range(150, 301)) <= delivered  # after the reconnection
    assert all(d not in fired for d in range(101, 150))  # nothing sent while unplugged was replayed later
    # The LED state was restored on the rebooted board (a new message, not a replay of the old one).
    assert emu.boards[1].flashes and any(k == "leds" for k, _ in emu.boards[1].history)

"""Stop-and-wait delivery between two Channels over a simulated line (no threads, simulated clock)."""

from __future__ import annotations

import random

from firmware_bridge import protocol as P
from firmware_bridge.emulator import LineNoise
from firmware_bridge.transport import Channel


class Peer:
    def __init__(self, name, **kw):
        self.name = name
        self.ch = Channel(**kw)
        self.got = []

    def handler(self, msg_type, seq, payload):
        if msg_type in P.RELIABLE_TYPES:
            if payload == b"refuse":
                return P.NAK_BAD_PAYLOAD
            self.got.append(payload)
        return 0


def run(a, b, now, steps, noise_ab=None, noise_ba=None, latency_ms=1):
    """Advance the clock ``steps`` ms, moving bytes each ms through optional noise."""
    for _ in range(steps):
        now += latency_ms
        a.ch.poll(now)
        b.ch.poll(now)
        ab, ba = a.ch.take_output(), b.ch.take_output()
        if noise_ab:
            ab = noise_ab.apply(ab)
        if noise_ba:
            ba = noise_ba.apply(ba)
        b.ch.receive(ab, now, b.handler)
        a.ch.receive(ba, now, a.handler)
    return now


def test_messages_arrive_in_order_once_and_are_confirmed():
    a, b = Peer("host"), Peer("mcu")
    for i in range(50):
        assert a.ch.send(P.FLASH, b"%d" % i, tag=i) or i >= 16
    run(a, b, 0, 200)
    assert b.got == [b"%d" % i for i in range(16)]
    assert a.ch.delivered == list(range(16))
    assert [t for t, r in a.ch.failed] == list(range(16, 50)) and a.ch.failed[0][1] == "queue full"


def test_lost_ack_is_answered_again_without_delivering_twice():
    a, b = Peer("host"), Peer("mcu")
    a.ch.send(P.SET_FIXATION, b"\x02", tag="fix")
    a.ch.poll(0)
    b.ch.receive(a.ch.take_output(), 0, b.handler)
    b.ch.take_output()  # the ACK is lost
    a.ch.poll(P.ticks_add(0, 250))  # timeout: resend the same seq
    b.ch.receive(a.ch.take_output(), 250, b.handler)
    a.ch.receive(b.ch.take_output(), 251, a.handler)
    assert b.got == [b"\x02"] and b.ch.duplicates == 1
    assert a.ch.delivered == ["fix"] and a.ch.resends == 1


def test_nak_fails_at_once_and_retries_are_bounded():
    a, b = Peer("host", max_retries=2, retry_ms=10), Peer("mcu")
    a.ch.send(P.BEEP, b"refuse", tag="bad")
    a.ch.send(P.BEEP, b"ok", tag="good")
    run(a, b, 0, 20)
    assert a.ch.failed == [("bad", "refused: bad payload")] and a.ch.delivered == ["good"]
    a.ch.send(P.BEEP, b"into the void", tag="lost")
    now = 100
    for _ in range(100):  # nobody answers
        now += 1
        a.ch.poll(now)
        a.ch.take_output()
    assert a.ch.failed[-1] == ("lost", "not confirmed after 3 sends")


def test_reset_fails_everything_and_restarts_sequence_numbers():
    a = Channel()
    a.send(P.FLASH, b"1", tag=1)
    a.send(P.FLASH, b"2", tag=2)
    a.poll(0)
    a.reset("link lost")
    assert a.failed == [(1, "link lost"), (2, "link lost")] and a.pending() == 0
    a.send(P.FLASH, b"3", tag=3)
    a.poll(1)
    assert P.Decoder().feed(a.take_output())[0][:2] == (P.FLASH, 1)


def test_corrupt_frame_triggers_a_fast_resend():
    a, b = Peer("host", retry_ms=1000), Peer("mcu")
    a.ch.send(P.FLASH, b"x", tag="x")
    a.ch.poll(0)
    wire = bytearray(a.ch.take_output())
    wire[3] ^= 0x40
    b.ch.receive(bytes(wire), 1, b.handler)  # bad CRC -> NAK_CORRUPT
    a.ch.receive(b.ch.take_output(), 2, a.handler)
    b.ch.receive(a.ch.take_output(), 3, b.handler)  # resent long before the 1 s timeout
    a.ch.receive(b.ch.take_output(), 4, a.handler)
    assert b.got == [b"x"] and a.ch.delivered == ["x"]


def test_exactly_once_or_failed_both_ways_over_a_noisy_line():
    rng = random.Random(7)
    a, b = Peer("host", retry_ms=20, max_retries=3), Peer("mcu", retry_ms=20, max_retries=3)
    noise_ab, noise_ba = LineNoise(0.01, 0.01, seed=1), LineNoise(0.01, 0.01, seed=2)
    sent = {a: 0, b: 0}
    now = 0
    while min(sent.values()) < 3000 or a.ch.pending() or b.ch.pending():
        for peer in (a, b):
            if sent[peer] < 3000 and peer.ch.pending() < 4:
                peer.ch.send(P.FLASH if peer is a else P.BUTTON, b"%d" % sent[peer], tag=sent[peer])
                sent[peer] += 1
        now = run(a, b, now, rng.randrange(1, 3), noise_ab, noise_ba)
    for sender, receiver in ((a, b), (b, a)):
        got = [int(p) for p in receiver.got]
        assert len(got) == len(set(got)), "a message was delivered twice"
        failed = {t for t, _ in sender.ch.failed}
        assert set(sender.ch.delivered) <= set(got)  # confirmed means delivered
        assert set(got) | failed == set(range(3000))  # every message delivered or reported failed
        assert got == sorted(got)  # stop-and-wait keeps order
        assert 0 < len(failed) < 60  # the "reported failed" path is exercised too (seeded: ~20 each way)
        assert receiver.ch.duplicates > 100  # lost ACKs caused resends that were not delivered twice
    assert noise_ab.corrupted > 100 and noise_ba.dropped > 100

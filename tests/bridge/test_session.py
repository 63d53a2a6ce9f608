"""Host session logic without a port: handshake checks, version mismatch, event numbering, silence, close flush."""

from __future__ import annotations

from firmware_bridge import protocol as P
from firmware_bridge.session import HostSession


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, kind, detail, number=None):
        self.events.append((kind, detail, number))


def reply(session_id, protocol=P.PROTOCOL_VERSION, caps=0x03):
    payload = bytes((protocol,)) + P.u16(session_id) + bytes((2, 1, 0)) + P.u16(caps) + b"\x05" + b"test-board"
    return P.encode_frame(P.HELLO_REPLY, 0, payload)


def started(now=0, **kw):
    rec = Recorder()
    s = HostSession(rec, now, port_name="/dev/ttyTEST", **kw)
    s.poll(now)
    ((msg_type, _, payload),) = P.Decoder().feed(s.take_output())
    assert msg_type == P.HELLO and payload[0] == P.PROTOCOL_VERSION
    return s, rec


def test_reply_for_another_session_is_ignored_then_the_right_one_connects():
    s, rec = started()
    s.feed(reply((s.session_id + 1) & 0xFFFF or 1), 1)
    assert not s.connected and rec.events == []
    s.feed(reply(s.session_id), 2)
    assert s.connected
    assert rec.events == [("connected", "test-board firmware 2.1.0, protocol 1, capabilities button,leds", None)]


def test_protocol_mismatch_is_reported_once_and_never_connects():
    s, rec = started(handshake_ms=50)
    for now in range(1, 2000, 10):
        s.feed(reply(s.session_id, protocol=P.PROTOCOL_VERSION + 1), now)
        s.poll(now)
        s.take_output()
    assert not s.connected
    assert [e[0] for e in rec.events] == ["error"]
    assert rec.events[0][1] == (f"The microcontroller speaks protocol {P.PROTOCOL_VERSION + 1} but this unit needs "
                                f"{P.PROTOCOL_VERSION}: flash the firmware shipped with this software "
                                f"(docs/firmware_bridge.md).")


def test_button_events_are_acked_numbered_and_gaps_reported():
    s, rec = started()
    s.feed(reply(s.session_id), 1)
    s.take_output()
    for seq, (pressed, number) in enumerate([(1, 7), (0, 8), (1, 11)], start=1):
        s.feed(P.encode_frame(P.BUTTON, seq, bytes((0, pressed)) + P.u16(number) + P.u32(1234)), 2)
        assert P.Decoder().feed(s.take_output()) == [(P.ACK, seq, b"")]
    assert rec.events[1:] == [("button_pressed", "capture", 7), ("button_released", "capture", 8),
                              ("error", "2 button event(s) from the microcontroller were lost on the line.", None),
                              ("button_pressed", "capture", 11)]
    s.feed(P.encode_frame(P.BUTTON, 4, b"\x00"), 3)  # too short: CRC fine, so the sender is wrong
    assert P.Decoder().feed(s.take_output()) == [(P.NAK, 4, bytes((P.NAK_BAD_PAYLOAD,)))]


def test_silence_is_reported_once_and_starts_a_new_handshake():
    s, rec = started(silence_ms=1000, heartbeat_ms=100)
    s.feed(reply(s.session_id), 1)
    s.send(P.FLASH, P.u16(10) + b"\xff", tag="flash")
    first_session = s.session_id
    for now in range(2, 2500, 10):
        s.poll(now)
        s.take_output()
    kinds = [e[0] for e in rec.events]
    assert kinds == ["connected", "error", "disconnected"]
    assert rec.events[1][1] == ("The microcontroller on /dev/ttyTEST has not answered for 1.0 s: check its cable "
                                "and that the firmware is flashed.")
    assert s.channel.failed[0][0] == "flash" and not s.connected and s.session_id != first_session
    assert s.send(P.FLASH, b"\x00\x01\xff", tag="x") is False  # no session: the caller reports it


def test_ping_round_trip_is_measured():
    s, rec = started(heartbeat_ms=100)
    s.feed(reply(s.session_id), 0)
    s.poll(150)
    ((msg_type, _, token),) = P.Decoder().feed(s.take_output())
    assert msg_type == P.PING
    s.feed(P.encode_frame(P.PONG, 0, token + P.u32(99) + b"\x00"), 153)
    assert s.ping_rtts_ms == [3]

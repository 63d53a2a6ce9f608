"""Wire format: CRC-16/CCITT-FALSE, COBS, frames, and the stream decoder under fuzzing."""

from __future__ import annotations

import binascii
import random

import pytest

from firmware_bridge import protocol as P


def reference_cobs_decode(block: bytes) -> bytes | None:
    """Textbook COBS decoder (independent of the one under test)."""
    out, i = [], 0
    while i < len(block):
        code = block[i]
        if code == 0 or i + code > len(block):
            return None
        out.extend(block[i + 1:i + code])
        i += code
        if code < 0xFF and i < len(block):
            out.append(0)
    return bytes(out)


def reference_frames(stream: bytes) -> list[tuple[int, int, bytes]]:
    """Every frame a correct decoder must deliver from ``stream`` (binascii's CRC, not ours)."""
    frames = []
    for block in stream.split(b"\x00")[:-1]:  # the last piece has no delimiter yet
        if not block or len(block) > P.MAX_ENCODED:
            continue
        body = reference_cobs_decode(block)
        if body is None or len(body) < 5 or body[2] != len(body) - 5:
            continue
        if binascii.crc_hqx(body[:-2], 0xFFFF) != int.from_bytes(body[-2:], "big"):
            continue
        frames.append((body[0], body[1], body[3:-2]))
    return frames


def test_crc16_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1  # the catalogue check value of CRC-16/CCITT-FALSE
    rng = random.Random(1)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(70)))
        assert P.crc16(data) == binascii.crc_hqx(data, 0xFFFF)


@pytest.mark.parametrize("raw, encoded", [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),  # Wikipedia's 254 non-zero bytes example
])
def test_cobs_known_vectors(raw, encoded):
    assert P.cobs_encode(raw) == encoded
    assert P.cobs_decode(encoded) == raw


def test_cobs_round_trip_never_contains_zero():
    rng = random.Random(2)
    for _ in range(500):
        data = bytes(rng.choice((0, rng.randrange(256))) for _ in range(rng.randrange(600)))
        enc = P.cobs_encode(data)
        assert b"\x00" not in enc and len(enc) <= len(data) + len(data) // 254 + 1
        assert P.cobs_decode(enc) == data


def test_frame_round_trip_and_every_single_byte_error_is_caught():
    wire = P.encode_frame(P.FLASH, 7, b"\x00\x78\xff")
    assert wire[0] == 0 and wire[-1] == 0 and b"\x00" not in wire[1:-1]
    assert P.Decoder().feed(wire) == [(P.FLASH, 7, b"\x00\x78\xff")]
    for i in range(1, len(wire) - 1):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(wire)
            bad[i] ^= flip
            dec = P.Decoder()
            assert dec.feed(bytes(bad)) == [] and dec.bad_frames + dec.good_frames >= 1
        dropped = wire[:i] + wire[i + 1:]
        assert P.Decoder().feed(dropped) == []
    with pytest.raises(ValueError):
        P.encode_frame(P.ERROR_REPORT, 1, bytes(P.MAX_PAYLOAD + 1))


def test_decoder_recovers_after_garbage_truncation_and_overflow():
    dec = P.Decoder()
    good = P.encode_frame(P.BUTTON, 1, b"\x00\x01\x00\x05\x00\x00\x00\x10")
    assert dec.feed(b"\xde\xad\xbe\xef") == []  # garbage with no delimiter yet
    assert dec.feed(good) == [(P.BUTTON, 1, b"\x00\x01\x00\x05\x00\x00\x00\x10")]  # its leading 0 ends the junk
    assert dec.bad_frames == 1
    dec = P.Decoder()
    truncated = good[:-4]
    assert dec.feed(truncated + good) == [(P.BUTTON, 1, b"\x00\x01\x00\x05\x00\x00\x00\x10")]
    assert dec.bad_frames == 1
    dec.feed(b"\x01" * (P.MAX_ENCODED * 3))  # a line full of junk: bounded memory
    assert dec.overflows == 1 and len(dec._buf) == 0
    assert dec.feed(good) == [(P.BUTTON, 1, b"\x00\x01\x00\x05\x00\x00\x00\x10")]
    # Split at every position: frames reassemble across reads.
    stream = good * 3
    for cut in range(len(stream)):
        dec = P.Decoder()
        assert len(dec.feed(stream[:cut]) + dec.feed(stream[cut:])) == 3


@pytest.mark.slow
def test_fuzz_100k_random_inputs_deliver_exactly_the_frames_with_good_crc():
    """Done-when: 100,000 random byte strings; no exception escapes, no frame with a bad CRC is delivered."""
    rng = random.Random(20171)
    samples = [P.encode_frame(t, rng.randrange(256), bytes(rng.randrange(256) for _ in range(rng.randrange(12))))
               for t in list(P.TYPE_NAMES) * 4]
    streaming = P.Decoder()
    carried = b""
    delivered = expected = 0
    for i in range(100_000):
        kind = i % 4
        if kind == 0:  # pure noise, zeros more likely so that blocks end
            data = bytes(rng.choice((0, rng.randrange(256), rng.randrange(256))) for _ in range(rng.randrange(1, 40)))
        elif kind == 1:  # a valid frame with random bytes flipped
            data = bytearray(rng.choice(samples))
            for _ in range(rng.randrange(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        elif kind == 2:  # truncated, with a byte dropped, or glued to another
            f = rng.choice(samples)
            cut = rng.randrange(1, len(f))
            data = rng.choice((f[:cut], f[:cut] + f[cut + 1:], f[:cut] + rng.choice(samples)))
        else:  # an intact frame among the junk
            data = rng.choice(samples)
        got = P.Decoder().feed(data)
        assert got == reference_frames(data), data
        # The same bytes as one long stream: frames may span strings.
        got_stream = streaming.feed(data)
        want_stream = reference_frames(carried + data)
        carried = (carried + data).rsplit(b"\x00", 1)[-1] if b"\x00" in data else carried + data
        if len(carried) > P.MAX_ENCODED:
            carried = b"\xff" * (P.MAX_ENCODED + 1)  # overflowed: the reference drops the block too
        assert got_stream == want_stream
        delivered += len(got)
        expected += kind == 3
    assert delivered >= expected > 20_000  # the intact frames all came through


def test_ticks_wrap():
    assert P.ticks_diff(5, P.TICKS_PERIOD - 5) == 10
    assert P.ticks_diff(P.TICKS_PERIOD - 5, 5) == -10
    assert P.ticks_add(P.TICKS_PERIOD - 1, 2) == 1
    assert P.get_u32(P.u32(0xDEADBEEF), 0) == 0xDEADBEEF and P.get_u16(P.u16(513), 0) == 513

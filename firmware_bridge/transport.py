"""Reliable delivery over the framed link: sequence numbers, ACK/NAK, resends, duplicate suppression. No I/O.

Both ends run this same class (the host driver and the firmware; it is copied onto the board unchanged, so it
keeps to the MicroPython subset). It is stop-and-wait: one reliable message in flight per direction, which keeps
commands in order (a flash never overtakes the LED change before it) and is plenty for a button and a few LEDs.

The owner does the I/O and supplies the time: ``receive(data, now, handler)`` with bytes read from the port,
``poll(now)`` from its loop, and writes ``take_output()`` to the port.
"""

try:
    from firmware_bridge import protocol as P
except ImportError:  # on the board the modules sit side by side
    import protocol as P

DEFAULT_RETRY_MS = 200  # ACK wait before a resend; a USB CDC round trip is ~1-5 ms, a busy Pi can stall ~100 ms
DEFAULT_MAX_RETRIES = 4
DEFAULT_QUEUE_SIZE = 16  # waiting reliable messages; the firmware keeps this small (RAM)


class Channel:
    """One end of the stop-and-wait link.

    Results of reliable messages are appended to ``delivered`` (tags confirmed by an ACK) and ``failed``
    (``(tag, reason)`` pairs: NAKed, not confirmed after all resends, dropped from a full queue, or cut off by a
    session reset). A failed message may still have arrived if only its ACKs were lost; it is never resent.
    """

    def __init__(self, retry_ms=DEFAULT_RETRY_MS, max_retries=DEFAULT_MAX_RETRIES, queue_size=DEFAULT_QUEUE_SIZE):
        self.retry_ms = retry_ms
        self.max_retries = max_retries
        self.queue_size = queue_size
        self.decoder = P.Decoder()
        self.delivered = []
        self.failed = []
        self.resends = 0
        self.duplicates = 0
        self._out = bytearray()
        self._queue = []
        self._inflight = None  # [type, seq, payload, tag, sent_at, attempts]
        self._tx_seq = 0
        self._rx_seq = 0  # last reliable seq delivered from the peer (0 = none this session)
        self._rx_reply = None  # the answer (ACK or NAK frame) we sent for it, repeated for duplicates

    # -- sending -------------------------------------------------------------------------------------------
    def send(self, msg_type, payload=b"", tag=None):
        """Queue a reliable message; returns False (and records it failed) when the queue is full."""
        if len(self._queue) >= self.queue_size:
            self.failed.append((tag, "queue full"))
            return False
        self._queue.append((msg_type, bytes(payload), tag))
        return True

    def send_unreliable(self, msg_type, payload=b"", seq=0):
        """Write a message once, now, without ACK (HELLO, PING, PONG, ACK, NAK)."""
        self._out.extend(P.encode_frame(msg_type, seq, payload))

    def pending(self):
        """Number of reliable messages queued or in flight."""
        return len(self._queue) + (1 if self._inflight else 0)

    def take_output(self):
        """Bytes to write to the port now (and forget them)."""
        out = bytes(self._out)
        self._out = bytearray()
        return out

    def reset(self, reason="session reset"):
        """Start a new session: fail everything in flight or queued and forget sequence state."""
        if self._inflight:
            self.failed.append((self._inflight[3], reason))
        for item in self._queue:
            self.failed.append((item[2], reason))
        self._queue = []
        self._inflight = None
        self._tx_seq = 0
        self._rx_seq = 0
        self._rx_reply = None
        self.decoder.reset()

    def poll(self, now):
        """Resend on timeout, give up after ``max_retries``, start the next queued message. ``now`` in ms ticks."""
        inflight = self._inflight
        if inflight is not None and P.ticks_diff(now, inflight[4]) >= self.retry_ms:
            if inflight[5] > self.max_retries:
                self._inflight = None
                self.failed.append((inflight[3], "not confirmed after %d sends" % inflight[5]))
            else:
                self._transmit(now)
        if self._inflight is None and self._queue:
            msg_type, payload, tag = self._queue.pop(0)
            self._tx_seq = self._tx_seq % 255 + 1  # 1..255, 0 is reserved for unreliable messages
            self._inflight = [msg_type, self._tx_seq, payload, tag, now, 0]
            self._transmit(now)

    def next_deadline(self, now):
        """Milliseconds until ``poll`` has timer work to do (None when nothing is in flight or queued)."""
        if self._inflight is not None:
            return max(0, self.retry_ms - P.ticks_diff(now, self._inflight[4]))
        return 0 if self._queue else None

    def _transmit(self, now):
        inflight = self._inflight
        if inflight[5]:
            self.resends += 1
        inflight[4] = now
        inflight[5] += 1
        self._out.extend(P.encode_frame(inflight[0], inflight[1], inflight[2]))

    # -- receiving -----------------------------------------------------------------------------------------
    def receive(self, data, now, handler):
        """Feed bytes from the port; call ``handler(type, seq, payload)`` for each new message.

        ACKs are consumed here. For a reliable message ``handler`` returns 0 to accept it (ACK) or a NAK reason;
        a duplicate (our ACK was lost) is answered again without calling ``handler``. NAKs are passed on after
        being applied, so the owner can react to NAK_NO_SESSION. Returns the number of bad blocks seen.
        """
        bad_before = self.decoder.bad_frames + self.decoder.overflows
        for msg_type, seq, payload in self.decoder.feed(data):
            if msg_type == P.ACK:
                self._on_ack(seq, now)
            elif msg_type == P.NAK:
                self._on_nak(seq, payload, now)
                handler(msg_type, seq, payload)
            elif msg_type in P.RELIABLE_TYPES and seq:
                if seq == self._rx_seq:
                    self.duplicates += 1
                    self._out.extend(self._rx_reply)
                    continue
                reason = handler(msg_type, seq, payload)
                if reason:
                    reply = P.encode_frame(P.NAK, seq, bytes((reason,)))
                else:
                    reply = P.encode_frame(P.ACK, seq)
                self._rx_seq = seq
                self._rx_reply = reply
                self._out.extend(reply)
            else:
                handler(msg_type, seq, payload)
        bad = self.decoder.bad_frames + self.decoder.overflows - bad_before
        if bad:
            self.send_unreliable(P.NAK, bytes((P.NAK_CORRUPT,)))
        return bad

    def _on_ack(self, seq, now):
        inflight = self._inflight
        if inflight is not None and inflight[1] == seq:
            self._inflight = None
            self.delivered.append(inflight[3])
            self.poll(now)

    def _on_nak(self, seq, payload, now):
        inflight = self._inflight
        if inflight is None:
            return
        reason = payload[0] if payload else 0
        if reason == P.NAK_CORRUPT:
            if inflight[5] <= self.max_retries:
                self._transmit(now)  # fast resend instead of waiting for the timeout
        elif seq == inflight[1]:
            self._inflight = None
            self.failed.append((inflight[3], "refused: " + P.NAK_REASONS.get(reason, "reason %d" % reason)))
            self.poll(now)

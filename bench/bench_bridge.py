"""Benchmark: round-trip latency of the microcontroller link (median, p99), measured side by side in one run.

Run: ``python bench/bench_bridge.py [--n 1000]``. Cases:

* ``loop:// frame echo``: pyserial's in-process loopback, encode + decode one frame; the framing cost alone.
* ``pty frame echo``: the same frame through a real pseudo-terminal to a thread that writes it straight back
  (kernel tty layer + thread wake-ups, no protocol logic).
* ``pty command -> ACK``: ``SerialLink.send_message`` (a FLASH) to the emulated firmware and back to
  "delivered": the whole stack the kiosk uses (driver thread, transport, firmware core, emulator thread).
* ``socket:// command -> ACK``: the same over pyserial's TCP URL to the emulator on 127.0.0.1 (no
  ``cancel_read`` there, so a queued command waits for the driver's 10 ms read timeout).

Ratios are to the loop:// case. Numbers depend on the machine's load: compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import tty

import serial

from firmware_bridge import protocol as P
from firmware_bridge.commands import flash_message
from firmware_bridge.emulator import Emulator
from firmware_bridge.serial_link import SerialLink

FRAME = P.encode_frame(P.FLASH, 1, P.u16(120) + b"\xff")


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


def _echo_rtts(port, n: int) -> list[float]:
    decoder = P.Decoder()
    rtts = []
    for _ in range(n):
        start = time.perf_counter()
        port.write(FRAME)
        got = []
        while not got:
            got = decoder.feed(port.read(max(1, port.in_waiting)))
        rtts.append(time.perf_counter() - start)
    return rtts


def bench_loop(n: int) -> list[float]:
    port = serial.serial_for_url("loop://", timeout=1.0)
    try:
        return _echo_rtts(port, n)
    finally:
        port.close()


def bench_pty_echo(n: int) -> list[float]:
    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def echo() -> None:
        import select
        while not stop.is_set():
            if select.select([master], [], [], 0.05)[0]:
                os.write(master, os.read(master, 4096))

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    port = serial.Serial(os.ttyname(slave), timeout=1.0)
    try:
        return _echo_rtts(port, n)
    finally:
        stop.set()
        thread.join()
        port.close()
        os.close(master)
        os.close(slave)


def bench_pty_command(n: int, tcp: bool = False) -> list[float]:
    with Emulator(tcp=tcp) as emu:
        link = SerialLink(emu.port, heartbeat_interval_s=5.0, silence_timeout_s=30.0, keep_outcomes=n + 10,
                          allow_network=tcp)  # the emulator's TCP mode (127.0.0.1): benchmarks only
        try:
            end = time.monotonic() + 10
            while not link.connected and time.monotonic() < end:
                time.sleep(0.01)
            if not link.connected:
                raise RuntimeError("the emulated microcontroller did not answer the handshake")
            rtts = []
            for i in range(n):
                start = time.perf_counter()
                ticket = link.send_message(*flash_message(i % 2000 + 1))
                while link.outcome(ticket) == "pending":
                    time.sleep(0.00005)
                if link.outcome(ticket) != "delivered":
                    raise RuntimeError(f"command {i} failed: {link.outcome(ticket)}")
                rtts.append(time.perf_counter() - start)
            return rtts
        finally:
            link.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="round trips per case")
    args = parser.parse_args()
    cases = [("loop:// frame echo", bench_loop), ("pty frame echo", bench_pty_echo),
             ("pty command -> ACK (driver + emulated firmware)", bench_pty_command),
             ("socket:// command -> ACK (driver + emulated firmware)", lambda n: bench_pty_command(n, tcp=True))]
    rows = []
    for name, fn in cases:
        fn(min(20, args.n))  # warm-up
        rows.append((name, *_percentiles(fn(args.n))))
    base = rows[0][1]
    print(f"round trips per case: {args.n}; frame {len(FRAME)} bytes on the wire")
    print(f"{'case':<54} {'median ms':>10} {'p99 ms':>10} {'median / loop://':>17}")
    for name, median, p99 in rows:
        print(f"{name:<54} {median:>10.3f} {p99:>10.3f} {median / base:>16.1f}x")


if __name__ == "__main__":
    main()

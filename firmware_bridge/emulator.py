"""The reference firmware running on a pseudo-terminal: a microcontroller in software.

``Emulator`` runs the very ``FirmwareCore`` that runs on the Pico, with a ``FakeBoard`` whose pins record every
change (gpiozero mock-pin style), on the master end of an ``os.openpty()`` pair. The host driver opens the slave end
by its name, exactly like ``/dev/ttyACM0``. A stable symlink stands in for ``/dev/serial/by-id/...``: ``unplug()``
closes the pty and removes the link, ``replug()`` makes a fresh pty (and, by default, a freshly booted firmware).
``LineNoise`` corrupts and drops bytes in both directions for soak tests.

Run one by hand: ``python -m firmware_bridge.emulator`` prints the port to give the kiosk.
"""

from __future__ import annotations

import os
import random
import select
import socket
import tempfile
import threading
import time
import tty

from firmware_bridge import protocol as P
from firmware_bridge.firmware.fw_core import FirmwareCore

TICK_S = 0.002  # firmware main-loop period when idle (the Pico loop runs every ~1 ms)


class ManualClock:
    """A millisecond clock that only moves when told to (``advance``), so firmware timing is tested tick by tick."""

    def __init__(self, start_ms: int = 0) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms % P.TICKS_PERIOD

    def advance(self, ms: int) -> None:
        self.now_ms += ms


class FakeBoard:
    """Pins in software: ``history`` lists every output change as ``(name, value)``; ``pressed`` drives buttons.

    Args:
        clock: ``() -> ms``; None = the wall clock (``time.monotonic``). A :class:`ManualClock` freezes time.
    """

    def __init__(self, clock=None) -> None:
        self._clock = clock
        self.history: list[tuple[str, object]] = []
        self.pressed = 0  # raw button bit mask, as the GPIO would read it
        self.state: dict[str, object] = {"leds": 0, "buzzer": 0, "illumination": 0, "fixation": 0}
        self.flashes: list[tuple[int, int]] = []  # (level, duration ms) of every pulse fired

    def ticks_ms(self) -> int:
        if self._clock is not None:
            return self._clock()
        return int(time.monotonic() * 1000) % P.TICKS_PERIOD

    def buttons(self) -> int:
        return self.pressed

    def _set(self, name: str, value: object) -> None:
        self.state[name] = value
        self.history.append((name, value))

    def leds(self, mask: int) -> None:
        self._set("leds", mask)

    def buzzer(self, freq_hz: int) -> None:
        self._set("buzzer", freq_hz)

    def illumination(self, level: int) -> None:
        self._set("illumination", level)

    def flash(self, level: int, duration_ms: int) -> None:
        self.flashes.append((level, duration_ms))
        self.history.append(("flash", (level, duration_ms)))

    def fixation(self, target: int) -> None:
        self._set("fixation", target)


class LineNoise:
    """Corrupts (replaces with a random byte) and drops bytes, each with its own probability per byte."""

    def __init__(self, corrupt: float = 0.0, drop: float = 0.0, seed: int = 0) -> None:
        self.corrupt, self.drop = corrupt, drop
        self.rng = random.Random(seed)
        self.corrupted = self.dropped = 0

    def apply(self, data: bytes) -> bytes:
        if not data or (self.corrupt <= 0 and self.drop <= 0):
            return data
        out = bytearray()
        rng = self.rng
        for b in data:
            r = rng.random()
            if r < self.drop:
                self.dropped += 1
            elif r < self.drop + self.corrupt:
                self.corrupted += 1
                out.append(b ^ rng.randint(1, 255))
            else:
                out.append(b)
        return bytes(out)


class Emulator:
    """A microcontroller on a pty (or a TCP socket), served by a background thread.

    Args:
        link_dir: folder for the stable symlink ``port`` (a temporary folder by default).
        tcp: serve on 127.0.0.1 instead of a pty; ``port`` is then a ``socket://`` URL (one host at a time).
        noise_in / noise_out: ``LineNoise`` for host->board and board->host bytes (None: a clean line).
        clock: the boards' millisecond clock; a :class:`ManualClock` makes the firmware's timers (debounce,
            watchdog, resends) move only with :meth:`advance`, while the thread still serves the line.
        firmware_kwargs: passed to ``FirmwareCore`` (``retry_ms``, ``max_retries``, ``queue_size``).
    """

    def __init__(self, link_dir: str | None = None, noise_in: LineNoise | None = None,
                 noise_out: LineNoise | None = None, tcp: bool = False, clock: ManualClock | None = None,
                 **firmware_kwargs) -> None:
        self.clock = clock
        self._tmp = None if link_dir else tempfile.TemporaryDirectory(prefix="mcu-emulator-")
        self.port = os.path.join(link_dir or self._tmp.name, "ttyMCU")
        self.noise_in, self.noise_out = noise_in, noise_out
        self.firmware_kwargs = firmware_kwargs
        self.boards: list[FakeBoard] = []  # one per boot
        self.cores: list[FirmwareCore] = []
        self.sessions = 0  # handshakes that started a new session, over all boots
        self.failed_events: list[tuple[object, str]] = []  # (event number, reason) over all boots
        self._pending_events: list[tuple[int, int]] = []
        self._lock = threading.RLock()
        self._master = self._slave = None
        self._tcp = tcp
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._stop = threading.Event()
        self._hung = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        """Plug in and boot; returns self (``with Emulator().start() as emu``)."""
        self.replug(reboot=True)
        self._thread = threading.Thread(target=self._run, name="mcu-emulator", daemon=True)
        self._thread.start()
        return self

    def unplug(self) -> None:
        """Pull the cable: close the pty (the host sees an I/O error) and remove the by-id style link."""
        with self._lock:
            if self._tcp:
                for sock in (self._conn, self._listener):
                    if sock is not None:
                        sock.close()
                self._conn = self._listener = None
                self._master = None
                return
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
            if os.path.lexists(self.port):
                os.unlink(self.port)

    def replug(self, reboot: bool = True) -> None:
        """Plug the cable back in: a new pty behind the same link; ``reboot`` starts a fresh firmware."""
        with self._lock:
            if self._master is not None or self._listener is not None:
                self.unplug()
            if reboot or not self.cores:
                board = FakeBoard(self.clock)
                self.boards.append(board)
                self.cores.append(FirmwareCore(board, **self.firmware_kwargs))
            if self._tcp:
                old = int(self.port.rsplit(":", 1)[1]) if self.port.startswith("socket://") else 0
                self._listener = socket.create_server(("127.0.0.1", old))  # SO_REUSEADDR: same port after replug
                self._listener.setblocking(False)
                self.port = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing, no CR/LF translation: a binary line like USB CDC
            os.set_blocking(master, False)
            tmp = self.port + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self.port)
            self._master, self._slave = master, slave

    def reboot(self) -> None:
        """Restart the firmware (watchdog reset) without touching the cable: the new boot has no session."""
        with self._lock:
            board = FakeBoard(self.clock)
            self.boards.append(board)
            self.cores.append(FirmwareCore(board, **self.firmware_kwargs))

    def hang(self) -> None:
        """Freeze the firmware: the port stays open but nothing is read or answered (a silent microcontroller).

        Returns once a step already under way has finished, so nothing sent after this call is answered."""
        self._hung.set()
        with self._lock:
            pass

    def resume(self) -> None:
        """Unfreeze after ``hang()``; bytes sent meanwhile are read then, as from a real USB buffer."""
        self._hung.clear()

    def stop(self) -> None:
        """Stop the thread and unplug."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.unplug()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Emulator:
        return self if self._thread else self.start()

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the host as if the board had sent them (garbage, half frames)."""
        with self._lock:
            if self._master is not None:
                os.write(self._master, data)

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------------------------------
    @property
    def board(self) -> FakeBoard:
        """The board of the current boot."""
        return self.boards[-1]

    @property
    def core(self) -> FirmwareCore:
        """The firmware of the current boot."""
        return self.cores[-1]

    def press(self, button: int = 0) -> None:
        """Hold a button down (the firmware debounces it)."""
        with self._lock:
            self.board.pressed |= 1 << button

    def release(self, button: int = 0) -> None:
        """Let a button go."""
        with self._lock:
            self.board.pressed &= ~(1 << button)

    def advance(self, ms: int) -> None:
        """With a :class:`ManualClock`: move time on ``ms`` milliseconds, running the firmware's timers every ms."""
        if self.clock is None:
            raise ValueError("advance() needs an Emulator made with clock=ManualClock().")
        for _ in range(ms):
            with self._lock:
                self.clock.advance(1)
                self.core.tick()

    def queue_events(self, count: int, button: int = 0) -> None:
        """Have the firmware report ``count`` press/release events as fast as its queue allows (soak tests)."""
        with self._lock:
            self._pending_events.extend((button, i % 2 == 0) for i in range(count))

    def events_pending(self) -> int:
        """Events queued by ``queue_events`` not yet handed to the firmware, plus those in its channel."""
        with self._lock:
            return len(self._pending_events) + self.core.channel.pending()

    # -- the firmware main loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._tcp and self._conn is None and self._listener is not None:
                self._accept()
                continue
            master = self._master
            if master is None or self._hung.is_set():
                time.sleep(TICK_S)
                continue
            try:
                ready, _, _ = select.select([master], [], [], TICK_S)
            except (OSError, ValueError):  # closed by unplug() in between
                continue
            with self._lock:
                if master != self._master or self._hung.is_set():  # hung while select() waited
                    continue
                self._step(master, bool(ready))

    def _accept(self) -> None:
        listener = self._listener
        try:
            if select.select([listener], [], [], TICK_S)[0]:
                conn, _ = listener.accept()
            else:
                return
        except (OSError, ValueError):  # closed by unplug() in between
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._conn, self._master = conn, conn.fileno()

    def _step(self, master: int, readable: bool) -> None:
        core = self.core
        data = b""
        if readable:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""
            if self._tcp and not data:  # the host closed the socket: wait for the next one
                self._conn.close()
                self._conn = self._master = None
                return
        if data:
            if self.noise_in is not None:
                data = self.noise_in.apply(data)
            session = core.session
            core.feed(data)
            if core.session != session:
                self.sessions += 1
        while self._pending_events and core.session is not None and core.channel.pending() < core.channel.queue_size:
            button, pressed = self._pending_events.pop(0)
            core.queue_button(button, pressed)
        core.tick()
        self.failed_events.extend(core.failed_events)
        core.failed_events = []
        out = core.take_output()
        if out and self.noise_out is not None:
            out = self.noise_out.apply(out)
        if out:
            try:
                os.write(master, out)
            except OSError:  # nobody reading and the pty buffer is full: bytes are lost, as on a real line
                pass


def main() -> None:  # pragma: no cover - manual tool
    """Run an emulator until Ctrl-C; press Enter to click the capture button."""
    with Emulator() as emu:
        print(f"emulated microcontroller on {emu.port} (Enter = click the button, Ctrl-C = quit)", flush=True)
        try:
            while True:
                input()
                emu.press()
                time.sleep(0.05)
                emu.release()
        except (KeyboardInterrupt, EOFError):
            pass


if __name__ == "__main__":  # pragma: no cover
    main()

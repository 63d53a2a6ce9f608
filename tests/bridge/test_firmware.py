"""The firmware core on a fake board (pure, simulated clock), and the MicroPython subset of the board files."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from firmware_bridge import protocol as P
from firmware_bridge.emulator import FakeBoard
from firmware_bridge.firmware import fw_core
from firmware_bridge.firmware.fw_core import FirmwareCore

PKG = Path(fw_core.__file__).resolve().parents[1]
BOARD_FILES = [PKG / "protocol.py", PKG / "transport.py", PKG / "firmware" / "fw_core.py", PKG / "firmware" / "main.py"]
MICROPYTHON_MODULES = {"machine", "micropython", "select", "sys", "time", "protocol", "transport", "fw_core",
                       "firmware_bridge"}


class ClockBoard(FakeBoard):
    def __init__(self):
        super().__init__()
        self.now = 1000

    def ticks_ms(self):
        return self.now


def host_frames(core):
    return P.Decoder().feed(core.take_output())


def handshake(core, session=0x1234):
    core.feed(P.encode_frame(P.HELLO, 0, bytes((P.PROTOCOL_VERSION,)) + P.u16(session)))
    return host_frames(core)


def test_hello_reply_and_commands_before_a_session_are_refused():
    board = ClockBoard()
    core = FirmwareCore(board)
    core.feed(P.encode_frame(P.SET_ILLUMINATION, 1, b"\x10"))
    assert host_frames(core) == [(P.NAK, 1, bytes((P.NAK_NO_SESSION,)))]
    ((msg_type, _, payload),) = handshake(core)
    assert msg_type == P.HELLO_REPLY and payload[:9] == bytes((1, 0x12, 0x34, 1, 0, 0, 0, 0x3F, 5))
    assert payload[9:] == b"pico-dr-unit"
    core.feed(P.encode_frame(P.SET_ILLUMINATION, 1, b"\x10"))
    assert host_frames(core) == [(P.ACK, 1, b"")] and board.state["illumination"] == 0x10


def test_repeated_hello_of_the_same_session_keeps_sequence_state():
    core = FirmwareCore(ClockBoard())
    handshake(core)
    core.feed(P.encode_frame(P.FLASH, 1, P.u16(100) + b"\xff"))
    handshake(core)  # the host resent HELLO because the first reply was slow
    core.feed(P.encode_frame(P.FLASH, 1, P.u16(100) + b"\xff"))  # and resends FLASH whose ACK it missed
    assert core.board.flashes == [(255, 100)]


def test_bad_commands_are_naked_with_a_reason():
    core = FirmwareCore(ClockBoard())
    handshake(core)
    cases = [(P.FLASH, P.u16(5000) + b"\xff"), (P.SET_FIXATION, b"\x09"), (P.BEEP, P.u16(50) + b"\x01\x01"),
             (P.SET_LEDS, b"\x01"), (P.BUTTON, b"\x00\x01")]
    for seq, (msg_type, payload) in enumerate(cases, start=1):
        core.feed(P.encode_frame(msg_type, seq, payload))
        reason = P.NAK_UNKNOWN_TYPE if msg_type == P.BUTTON else P.NAK_BAD_PAYLOAD
        assert host_frames(core) == [(P.NAK, seq, bytes((reason,)))]
    assert core.board.flashes == [] and core.board.state["fixation"] == 0


def test_debounced_button_is_reported_and_stuck_button_is_flagged():
    board = ClockBoard()
    core = FirmwareCore(board)
    handshake(core)
    board.pressed = 1
    for _ in range(30):
        board.now += 1
        core.tick()
    frames = host_frames(core)
    assert [(t, p[:4]) for t, _, p in frames] == [(P.BUTTON, b"\x00\x01\x00\x01")]
    board.now += fw_core.STUCK_BUTTON_MS
    core.feed(P.encode_frame(P.ACK, frames[0][1]))
    core.feed(P.encode_frame(P.PING, 0, P.u16(7)))  # keep the host watchdog fed
    core.tick()
    reports = [p for t, _, p in host_frames(core) if t == P.ERROR_REPORT]
    assert reports == [bytes((fw_core.ERROR_BUTTON_STUCK,)) + b"button held for 10 s: check it is not stuck"]


def test_host_silence_drops_the_session_and_blinks_amber():
    board = ClockBoard()
    core = FirmwareCore(board)
    handshake(core)
    core.feed(P.encode_frame(P.SET_LEDS, 1, bytes((P.LED_RED, 0)) + P.u16(1000)))
    core.tick()
    assert board.state["leds"] == P.LED_RED
    board.now += fw_core.HOST_TIMEOUT_MS + 1
    core.tick()
    assert core.session is None
    seen = set()
    for _ in range(4):
        board.now += fw_core.NO_HOST_BLINK_MS
        core.tick()
        seen.add(board.state["leds"])
    assert seen == {0, P.LED_AMBER}


def test_board_files_stay_in_the_micropython_subset():
    for path in BOARD_FILES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            assert not isinstance(node, ast.JoinedStr), f"{path.name}:{node.lineno} f-strings: avoid on the board"
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert set(names) <= MICROPYTHON_MODULES, f"{path.name}:{node.lineno} imports {names}"


def test_board_layout_imports_flat_and_handshakes(tmp_path):
    """The files as copied to the board (flat, no package) run: the fallback imports work."""
    for path in BOARD_FILES[:3]:
        shutil.copy(path, tmp_path / path.name)
    script = (
        # The package is made unimportable, as on the board, so the fallback imports are what runs.
        "import sys; sys.path.insert(0, '.'); sys.modules['firmware_bridge'] = None\n"
        "import fw_core, protocol as P\n"
        "class B:\n"
        "    def __init__(s): s.log = []\n"
        "    def ticks_ms(s): return 5\n"
        "    def buttons(s): return 0\n"
        "    def __getattr__(s, name): return lambda *a: s.log.append((name, a))\n"
        "core = fw_core.FirmwareCore(B())\n"
        "core.feed(P.encode_frame(P.HELLO, 0, bytes((P.PROTOCOL_VERSION, 0, 9))))\n"
        "core.feed(P.encode_frame(P.SET_FIXATION, 1, bytes((2,))))\n"
        "print([f[0] for f in P.Decoder().feed(core.take_output())], core.board.log)\n")
    out = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[2, 5] [('fixation', (2,))]"


MICROPYTHON_SHIM = r'''
import io, json, runpy, sys, types
sys.path.insert(0, ".")
sys.modules["firmware_bridge"] = None  # as on the board: the modules sit side by side
import protocol as P

LOG, CLOCK, LOOPS = [], [0], [0]

class Pin:
    IN, OUT, PULL_UP = 0, 1, 2
    all = {}
    def __init__(self, n, mode=None, pull=None, value=None):
        self.n, self.v = n, (1 if mode == Pin.IN else (value or 0))
        Pin.all[n] = self
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        LOG.append(("pin", self.n, v))
    def toggle(self):
        self.v ^= 1

class PWM:
    def __init__(self, pin):
        self.pin = pin
    def freq(self, f):
        LOG.append(("freq", self.pin.n, f))
    def duty_u16(self, d):
        LOG.append(("duty", self.pin.n, d))

class Timer:
    ONE_SHOT = 0
    def init(self, mode, period, callback):
        LOG.append(("timer", period))
        self.cb = callback

class WDT:
    def __init__(self, timeout):
        LOG.append(("wdt", timeout))
    def feed(self):
        LOOPS[0] += 1
        if LOOPS[0] == 100:
            Pin.all[12].v = 0  # the capture button goes down
        if LOOPS[0] == 300:
            raise SystemExit(0)

machine = types.ModuleType("machine")
machine.Pin, machine.PWM, machine.Timer, machine.WDT = Pin, PWM, Timer, WDT
micropython = types.ModuleType("micropython")
micropython.kbd_intr = lambda c: LOG.append(("kbd_intr", c))
fake_time = types.ModuleType("time")
fake_time.ticks_ms = lambda: CLOCK[0]
fake_time.ticks_diff = lambda a, b: a - b
def sleep_ms(ms):
    CLOCK[0] += ms
fake_time.sleep_ms = sleep_ms

host = b"".join([
    P.encode_frame(P.HELLO, 0, bytes((P.PROTOCOL_VERSION,)) + P.u16(77)),
    P.encode_frame(P.SET_LEDS, 1, bytes((P.LED_RED, 0)) + P.u16(1000)),
    P.encode_frame(P.FLASH, 2, P.u16(120) + b"\xff"),
    P.encode_frame(P.SET_FIXATION, 3, b"\x02"),
    P.encode_frame(P.SET_ILLUMINATION, 4, b"\x80"),
    P.encode_frame(P.BEEP, 5, P.u16(2700) + b"\x0a\x00"),
])
stdin = types.SimpleNamespace(buffer=io.BytesIO(host))
out = io.BytesIO()
class Poll:
    def register(self, stream, mask):
        pass
    def poll(self, timeout):
        return [1] if stdin.buffer.tell() < len(host) else []
fake_select = types.ModuleType("select")
fake_select.POLLIN, fake_select.poll = 1, Poll
sys.modules.update(machine=machine, micropython=micropython, time=fake_time, select=fake_select)
real_stdout = sys.stdout
sys.stdin, sys.stdout = stdin, types.SimpleNamespace(buffer=out)
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit:
    pass
sys.stdout = real_stdout
frames = [[t, s, p.hex()] for t, s, p in P.Decoder().feed(out.getvalue())]
print(json.dumps({"frames": frames, "log": LOG}))
'''


def test_board_main_runs_on_micropython_shims(tmp_path):
    """main.py (the pin layer) runs its loop against stand-ins for machine/select/time/USB CDC: pins follow commands."""
    import json

    for path in BOARD_FILES:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "shim.py").write_text(MICROPYTHON_SHIM)
    out = subprocess.run([sys.executable, "-I", "shim.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    frames = [(t, s) for t, s, _ in result["frames"]]
    assert frames[0] == (P.HELLO_REPLY, 0) and frames[1:6] == [(P.ACK, seq) for seq in range(1, 6)]
    button = [bytes.fromhex(p) for t, _, p in result["frames"] if t == P.BUTTON]
    assert [b[:4] for b in button] == [b"\x00\x01\x00\x01"]  # pressed, event 1
    log = [tuple(x) for x in result["log"]]
    assert ("kbd_intr", -1) in log and ("wdt", 2000) in log
    assert ("pin", 15, 1) in log  # red LED
    assert ("pin", 16, 1) in log and ("timer", 120) in log  # flash pulse timed by the hardware timer
    assert ("pin", 19, 1) in log  # fixation target 2
    assert ("duty", 17, 128 * 257) in log  # illumination PWM
    assert ("freq", 11, 2700) in log and ("duty", 11, 32768) in log and ("duty", 11, 0) in log  # one chirp

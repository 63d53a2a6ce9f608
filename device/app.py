"""Start the unit from its config: ``kiosk``, ``demo`` and ``selftest`` (the CLI calls these functions).

    summary = run_demo("demo_output")        # fakes + bundled model + samples/, both eyes of a few patients
    code = run_kiosk("my_unit.toml")         # the real loop
    checks = selftest(load_config("my_unit.toml"))
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from device.atomic import write_atomic
from device.camera import open_camera
from device.config import DEMO_CONFIG, UnitConfig, load_config, model_config_for
from device.display import FileDisplayConfig, open_display
from device.errors import HardwareError, ModelError, ScreeningError, not_saved_message
from device.keyboard import KeyboardTrigger
from device.kiosk import Kiosk, KioskSummary
from device.model import BundleModelConfig, FakeModelConfig, ModelBundle, open_model
from device.model.store import ModelStore
from device.model.watch import ActiveModelWatch
from device.records import RecordStore
from device.screen_render import render_message

# How long selftest waits for a configured microcontroller to answer its handshake, seconds.
LINK_WAIT_S = 2.0


def build_kiosk(cfg: UnitConfig, model: str | None = None, keyboard=None) -> Kiosk:
    """Open every device of the config and return the loop, ready to run.

    Raises:
        ModelError: the model is missing or fails its checks (shown on the display first when possible).
        HardwareError: the display or the records folder cannot be opened.
    """
    from firmware_bridge.factory import open_link

    display = open_display(cfg.display)
    # First, so a second unit process on the same records folder is refused before it touches anything.
    try:
        store = RecordStore.from_config(cfg.records)
    except ScreeningError as exc:  # in use, unwritable, full: the nurse reads it on the screen too
        _show_quietly(display, "RECORDS PROBLEM", str(exc))
        raise
    stored = isinstance(cfg.model, BundleModelConfig) and bool(cfg.model.store)
    try:
        # The pointer is read before the model is loaded, so a switch in between is noticed at the first patient.
        watch = ActiveModelWatch(cfg.model, fixed=model is not None) if stored else None
        the_model = open_model(model_config_for(cfg, model))
    except ModelError as exc:
        store.close()
        display.show(render_message("MODEL PROBLEM", str(exc), "error", display.size), "model_error")
        raise
    camera = open_camera(cfg.camera, Path(cfg.base_dir))
    link = open_link(cfg.link)
    try:
        if stored:  # sweep what an interrupted `device model` command left (unless one is running now)
            ModelStore(cfg.model, lambda action, detail, mid: store.audit("unit", action, detail, mid)).try_recover()
        return Kiosk(cfg, camera, the_model, display, link, store, keyboard, watch)
    except ScreeningError as exc:  # the session could not be recorded (full disk, locked database)
        _show_quietly(display, "NOT SAVED", str(exc))
        for thing in (camera, link, store):
            _close_quietly(thing)
        raise


def _show_quietly(display, headline: str, message: str) -> None:
    try:
        display.show(render_message(headline, message, "error", display.size), "error")
    except Exception:  # noqa: BLE001 - the sentence is also raised to the command line
        pass


def _close_quietly(thing) -> None:
    try:
        thing.close()
    except Exception:  # noqa: BLE001 - closing must not mask the problem being reported
        pass


def run_kiosk(config: str | Path | None = None, model: str | None = None) -> KioskSummary:
    """Run the screening loop with keyboard input from stdin until 'q', SIGTERM or the configured patients.

    Returns:
        The session summary.
    """
    from device.console.server import spawn, stop

    cfg = load_config(config)
    kiosk = build_kiosk(cfg, model, KeyboardTrigger(sys.stdin))
    for sig in (signal.SIGTERM, signal.SIGINT):  # systemd stop, Ctrl-C: end the session cleanly
        signal.signal(sig, lambda *_: kiosk.stop())
    console = spawn(cfg, str(config) if config else None)  # [console] enabled = true: the web page too
    try:
        return kiosk.run()
    finally:
        stop(console)
        _close(kiosk)


def _close(kiosk: Kiosk) -> None:
    for thing in (kiosk.camera, kiosk.link, kiosk.display, kiosk.store):
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - closing must not mask the session's outcome
            pass


def demo_config(out_dir: str | Path = "demo_output", patients: int | None = None) -> UnitConfig:
    """The demo config with its outputs redirected to ``out_dir`` (screens/, records/, session exports)."""
    cfg = load_config(DEMO_CONFIG)
    out = Path(out_dir)
    display = cfg.display
    if isinstance(display, FileDisplayConfig):
        display = display.model_copy(update={"folder": str(out / "screens")})
    kiosk = cfg.kiosk.model_copy(update={"export_folder": str(out), **({"patients": patients} if patients else {})})
    model = cfg.model
    if isinstance(model, BundleModelConfig) and model.store:
        model = model.model_copy(update={"store": str(out / "models")})
    return cfg.model_copy(update={"display": display, "kiosk": kiosk, "model": model,
                                  "records": cfg.records.model_copy(update={"folder": str(out / "records")})})


def run_demo(out_dir: str | Path = "demo_output", model: str | None = None,
             patients: int | None = None) -> KioskSummary:
    """The README's main job: screen both eyes of a few patients from samples/ with the bundled model.

    Writes the result screens (PNG) to ``out_dir/screens``, the records to ``out_dir/records`` and the session as
    CSV and JSON to ``out_dir``.

    Args:
        out_dir: output folder (created).
        model: a bundle folder, or 'fake'; default: the demo config's (the bundled default model).
        patients: how many patients (default: the demo config's).
    """
    cfg = demo_config(out_dir, patients)
    kiosk = build_kiosk(cfg, model)  # refused while another demo owns out_dir/records: its screens stay
    screens = Path(cfg.display.folder) if isinstance(cfg.display, FileDisplayConfig) else None
    if screens is not None and screens.is_dir():
        shutil.rmtree(screens)  # the demo owns this folder; old screens would mix with the new session's
    try:
        return kiosk.run()
    finally:
        _close(kiosk)


@dataclass(frozen=True)
class Check:
    """One self-test line."""

    name: str
    ok: bool
    message: str


def _check(name: str, fn) -> Check:
    try:
        return Check(name, True, fn())
    except ScreeningError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - the self-test reports, never crashes
        return Check(name, False, f"{type(exc).__name__}: {exc}")


def selftest(cfg: UnitConfig, model: str | None = None) -> list[Check]:
    """Check the model, camera, display, microcontroller link and disk of a config, each on its own.

    Returns:
        One :class:`Check` per part; the unit is ready when all are ok.
    """
    from firmware_bridge.factory import open_link

    def check_model() -> str:
        mcfg = model_config_for(cfg, model)
        m = open_model(mcfg)
        if isinstance(mcfg, FakeModelConfig):
            return f"{m.contract.id}: fake model, not for screening"
        signature = m.signature.describe() if isinstance(m, ModelBundle) and m.signature else "signature not checked"
        return (f"{m.contract.id}: sha256, card and self-test passed (input {m.contract.input_size} px); "
                f"{signature}")

    def check_camera() -> str:
        cam = open_camera(cfg.camera, Path(cfg.base_dir))
        try:
            frame = cam.capture()
        finally:
            cam.close()
        h, w = frame.rgb.shape[:2]
        return f"{cfg.camera.type}: captured {w}x{h} from {frame.source}"

    def check_display() -> str:
        d = open_display(cfg.display)
        try:
            d.show(render_message("SELF-TEST", "Display check: if you can read this, the screen works.", "info",
                                  d.size), "selftest")
        finally:
            d.close()
        return f"{cfg.display.type}: {d.size[0]}x{d.size[1]} screen shown"

    def check_link() -> str:
        if cfg.link.type == "none":
            return "no microcontroller configured (keyboard trigger, no LEDs)"
        link = open_link(cfg.link)
        try:
            deadline = time.monotonic() + LINK_WAIT_S
            while time.monotonic() < deadline and not link.connected:
                link.poll_events()
                time.sleep(0.05)
            if not link.connected:
                raise ConnectionError("the microcontroller did not answer: check its USB cable")
            link.beep("ok")
        finally:
            link.close()
        return f"{cfg.link.type}: connected"

    def check_disk() -> str:
        folder = Path(cfg.records.folder)
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".selftest-{uuid.uuid4().hex}"
        try:
            write_atomic(probe, b"ok")
        except OSError as exc:
            raise HardwareError(not_saved_message(exc, "the test file", "run the self-test again")) from None
        probe.unlink()
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize / 2 ** 20
        if free < cfg.records.min_free_mb:
            raise OSError(f"only {free:.0f} MiB free in {folder}, below {cfg.records.min_free_mb} MiB: free space")
        return f"{folder}: writable, {free / 1024:.1f} GiB free"

    return [_check("model", check_model), _check("camera", check_camera), _check("display", check_display),
            _check("link", check_link), _check("disk", check_disk)]


def record_selftest(cfg: UnitConfig, checks: list[Check]) -> bool:
    """Append the self-test's outcome to the records' audit trail (the console's unit page shows it).

    Safe while the kiosk runs: the store is opened without crash recovery. Returns False when the records folder
    cannot be opened (the disk check then says why).
    """
    try:
        store = RecordStore(cfg.records.folder, cfg.records.fsync, recover=False)
    except ScreeningError:
        return False
    try:
        store.audit("unit", "selftest", {"ok": all(c.ok for c in checks),
                                         "checks": [{"name": c.name, "ok": c.ok, "message": c.message}
                                                    for c in checks]})
    except ScreeningError:  # a full disk or a locked database: the disk check already says which
        return False
    finally:
        store.close()
    return True

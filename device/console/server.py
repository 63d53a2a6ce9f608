"""Run the console: waitress (pure-Python WSGI server) on the configured address, and the kiosk's helper that
starts it as a separate process.

    python -m device console --records demo_output/records         # http://127.0.0.1:8080/
    python -m device console-password --records demo_output/records --user nurse
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from device.config import UnitConfig, load_config
from device.console.auth import Credentials
from device.errors import ConfigError

log = logging.getLogger("device.console")
THREADS = 4  # waitress worker threads: a clinic has a handful of browsers; each request is a few ms of SQLite
WEB_PACKAGES = ("flask", "flask_wtf", "flask_limiter", "waitress", "argon2", "fpdf")


def settings_for(config: str | None, records: str | None):
    """The console settings of a config file (default: the demo config), ``records`` overriding its folder."""
    from device.console.context import ConsoleSettings

    unit = load_config(config)
    folder = Path(records) if records else Path(unit.records.folder)
    return ConsoleSettings(records=folder, unit=unit, config_path=config)


def need_password(creds: Credentials, prompt) -> None:
    """Make sure somebody can log in: ask for a first user and PIN on a terminal, else refuse with one sentence.

    Args:
        creds: the credentials file.
        prompt: ``prompt(text, hide) -> str`` (click.prompt), or None when there is no terminal.

    Raises:
        ConfigError: no user exists and there is no terminal to create one.
    """
    if creds.users():
        return
    if prompt is None:
        raise ConfigError(f"No console user exists yet ({creds.path}): set one with `python -m device "
                          "console-password --records <folder>`, then start the console again.")
    user = prompt("No console user exists yet. New user name", False)
    password = prompt("PIN or password (6 characters or more)", True)
    creds.set_password(user, password)


def make_server(settings, host: str, port: int):
    """A waitress server for the console (``port`` 0 picks a free port: ``server.effective_port``)."""
    from waitress import create_server

    from device.console.app import create_app

    return create_server(create_app(settings), host=host, port=port, threads=THREADS, ident="dr-console",
                         clear_untrusted_proxy_headers=True)


def serve(settings, host: str | None = None, port: int | None = None, prompt=None) -> None:
    """Serve the console until Ctrl-C or SIGTERM.

    Args:
        settings: from :func:`settings_for`.
        host, port: override the config's ``[console]`` address.
        prompt: see :func:`need_password`.
    """
    from device.console.config import ConsoleConfig

    cfg = settings.unit.console
    if host is not None:
        try:
            cfg = ConsoleConfig.model_validate({**cfg.model_dump(), "host": host})  # the config's own check
        except ValidationError as exc:
            why = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"--host {host} cannot be used ({why}).") from None
    creds = Credentials.for_records(settings.records, cfg.credentials)
    need_password(creds, prompt)
    from device.console.store import RecordReader

    RecordReader(settings.records).close()  # one clear sentence now if the records cannot be read
    server = make_server(settings, cfg.host, cfg.port if port is None else port)
    shown = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"Console for {settings.records} at http://{shown}:{server.effective_port}/ (research tool, not a "
          "medical device). Ctrl-C stops it.", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def spawn(cfg: UnitConfig, config_path: str | None) -> subprocess.Popen | None:
    """Start the console beside the kiosk when the config enables it (a separate process: a console problem can
    never stop screening). Returns the process, or None when disabled or the web packages are not installed."""
    if not cfg.console.enabled:
        return None
    missing = [m for m in WEB_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        log.error("console not started: install the unit extra (pip install -e '.[unit]'); missing %s", missing)
        return None
    cmd = [sys.executable, "-m", "device", "console", "--records", str(Path(cfg.records.folder).resolve()),
           "--host", cfg.console.host, "--port", str(cfg.console.port)]
    if config_path:
        cmd += ["--config", str(Path(config_path).resolve())]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen | None, wait_s: float = 5.0) -> None:
    """End a console started by :func:`spawn` (SIGTERM, then SIGKILL after ``wait_s``)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

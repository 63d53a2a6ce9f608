"""The console's config section, its two commands, the kiosk starting it, and no outside addresses anywhere."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from device.cli import cli
from device.config import load_config, parse_config
from device.console.auth import Credentials
from device.console.server import spawn, stop
from device.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[3] / "device" / "console"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "10.42.0.1", "::1"])
def test_console_section_accepts_this_units_addresses(host):
    assert parse_config({"console": {"host": host}}).console.host == host


@pytest.mark.parametrize("console, words", [({"host": "0.0.0.0"}, "every network"), ({"host": "::"}, "every"),
                                            ({"host": "unit.local"}, "IP address"), ({"port": 80}, "port"),
                                            ({"paper": "Letter"}, "paper"), ({"colour": "red"}, "colour")])
def test_console_section_errors_name_the_field(console, words):
    with pytest.raises(ConfigError, match=words):
        parse_config({"console": console})


def test_demo_config_has_a_console_section_on_localhost():
    cfg = load_config()
    assert cfg.console.host == "127.0.0.1" and cfg.console.port == 8080 and not cfg.console.enabled


def test_console_password_command(tmp_path):
    records = tmp_path / "records"
    r = CliRunner().invoke(cli, ["console-password", "--records", str(records), "--user", "sister"],
                           input="pin-000111\npin-000111\n")
    assert r.exit_code == 0, r.output
    assert Credentials.for_records(records).verify("sister", "pin-000111")
    r = CliRunner().invoke(cli, ["console-password", "--records", str(records)], input="123\n123\n")
    assert r.exit_code != 0 and "6 to 256 characters" in str(r.exception)


def test_console_without_a_user_and_no_terminal_says_what_to_do(tmp_path):
    p = subprocess.run([sys.executable, "-m", "device", "console", "--records", str(tmp_path)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "python -m device console-password" in p.stderr and "Traceback" not in p.stderr


def test_console_refuses_all_interfaces_from_the_command_line(records):
    p = subprocess.run([sys.executable, "-m", "device", "console", "--records", str(records), "--host", "0.0.0.0"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "every network" in p.stderr


def _wait_for(url: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5)
        except urllib.error.HTTPError as exc:
            return exc
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_console_command_serves_on_localhost(records):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "device", "console", "--records", str(records), "--port", str(port)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = _wait_for(f"http://127.0.0.1:{port}/patient/P00001")
        assert page.status == 200 and page.url.endswith("/login?next=/patient/P00001")  # redirected, then login
        assert 'name="password"' in page.read().decode()
    finally:
        stop(p)
    assert f"http://127.0.0.1:{port}/" in p.stdout.read()


def test_kiosk_starts_the_console_when_the_config_enables_it(records, tmp_path):
    port = free_port()
    cfg = parse_config({"records": {"folder": str(records)}, "console": {"enabled": True, "port": port}})
    process = spawn(cfg, None)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/login").status == 200
    finally:
        stop(process)
    assert process.poll() is not None
    assert spawn(parse_config({}), None) is None  # disabled by default


def test_nothing_in_the_console_points_outside_this_unit():
    outside = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.I)
    for path in list((PACKAGE / "templates").glob("*.html")) + list((PACKAGE / "static").glob("*")):
        assert not outside.search(path.read_text()), f"{path.name} refers to another host"
    css = (PACKAGE / "static" / "console.css").read_text()
    assert "@import" not in css and "url(" not in css and "@font-face" not in css

"""Console fixtures: a synthetic records folder, a console app over it, a logged-in client."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flask", reason="the console needs the unit extra (Flask, waitress, argon2-cffi, fpdf2)")

from device.config import load_config
from device.console.app import create_app
from device.console.auth import Credentials
from device.console.context import ConsoleSettings
from device.console.synthetic import fill_records, result
from device.records import RecordStore

USER, PASSWORD = "nurse", "pin-123456"
# Patient ids a person could type at another unit: quotes, LIKE wildcards, a spreadsheet formula.
ODD_IDS = ("O'Brien%_1", '=HYPERLINK("http://x","click")', "+SUM(A1)", "@cmd", "-2+3")


class FakeClock:
    """Seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def add_odd_patients(folder: Path) -> None:
    """One visit per odd patient id, screened now."""
    store = RecordStore(folder, fsync=False)
    try:
        sid = store.start_session("=op", "synthetic-model", "u", {"decision_threshold": 0.6, "sha256": "a" * 64})
        img, screen = np.zeros((32, 32, 3), np.uint8), np.zeros((19, 32, 3), np.uint8)
        for pid in ODD_IDS:
            store.save(sid, pid, "right", 1, result("referable", 0.9, regions=1), img, screen, "=op", "=src")
    finally:
        store.close()


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """30 synthetic visits over 3 days (today last) plus the odd patient ids, and a console user."""
    folder = tmp_path_factory.mktemp("console") / "records"
    fill_records(folder, visits=30, days=3)
    add_odd_patients(folder)
    Credentials.for_records(folder).set_password(USER, PASSWORD)
    return folder


def make_app(records: Path, clock=None, **console):
    unit = load_config()
    if console:
        unit = unit.model_copy(update={"console": unit.console.model_copy(update=console)})
    app = create_app(ConsoleSettings(records=records, unit=unit), clock=clock)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(records, clock):
    return make_app(records, clock)


def csrf(client, path: str = "/login") -> str:
    """The CSRF token of the form on ``path``."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, user: str = USER, password: str = PASSWORD, **environ):
    """Post the login form; returns the response."""
    return client.post("/login", data={"user": user, "password": password, "csrf_token": csrf(client), "next": "/"},
                       environ_overrides=environ or None)


@pytest.fixture
def client(app):
    """A logged-in test client."""
    c = app.test_client()
    assert login(c).status_code == 303
    return c

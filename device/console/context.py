"""What the console's request handlers share: the settings of the running console, this request's read-only
records connection and the access log. A module of its own so that the app and its page modules import it, and
not each other."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import current_app, g

from device.config import UnitConfig
from device.console.store import RecordReader


@dataclass(frozen=True)
class ConsoleSettings:
    """What one console serves."""

    records: Path  # the records folder (records.sqlite + images/)
    unit: UnitConfig  # the unit's config: [console] section, model, min free space
    config_path: str | None = None  # shown on the unit page


def reader() -> RecordReader:
    """This request's read-only records connection (opened on first use, closed when the request ends)."""
    if "reader" not in g:
        g.reader = RecordReader(settings().records)
    return g.reader


def settings() -> ConsoleSettings:
    """The settings of the running console."""
    return current_app.extensions["console"]


def access_log() -> logging.Logger:
    """The console's access log (logins, exports, letters)."""
    return current_app.extensions["console_access"]

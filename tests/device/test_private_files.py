"""Patient data is the unit's user's only (issue 16 item 8): the database (and its WAL files), photographs, result
screens written to files, session exports and their folders, whatever the umask."""

from __future__ import annotations

import os
import stat

import pytest

from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FileDisplay, FileDisplayConfig
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import RecordStore
from firmware_bridge.fake import FakeLink


@pytest.fixture()
def open_umask():
    old = os.umask(0)  # the most permissive umask: nothing is taken away from the modes the code asks for
    yield
    os.umask(old)


def _modes(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_everything_the_kiosk_writes_is_private(tmp_path, open_umask):
    out = tmp_path / "demo_output"
    cfg = parse_config({"records": {"folder": str(out / "records"), "fsync": True, "min_free_mb": 0},
                        "kiosk": {"trigger": "auto", "patients": 1, "poll_interval_s": 0.0,
                                  "export_folder": str(out)}})
    store = RecordStore(cfg.records.folder, fsync=True)
    display = FileDisplay(FileDisplayConfig(folder=str(out / "screens")))
    k = Kiosk(cfg, FakeCamera(frames=[draw_fundus(5, 320, 240)]), FakeModel(size=64), display, FakeLink(), store)
    summary = k.run()
    assert summary.screenings == 2 and len(summary.exported) == 2
    modes = _modes(out)
    assert {"records/records.sqlite", "records/records.sqlite-wal", "screens", "records/images"} <= set(modes)
    loose = {p: oct(m) for p, m in modes.items()
             if m != (0o700 if os.path.isdir(out / p) else 0o600)}
    assert loose == {}  # before: 0644 files in 0755 folders
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o700
    store.close()


def test_an_older_records_folder_is_tightened_on_open(tmp_path):
    folder = tmp_path / "rec"
    RecordStore(folder, fsync=False).close()
    os.chmod(folder, 0o755)
    os.chmod(folder / "records.sqlite", 0o644)
    RecordStore(folder, fsync=False).close()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "records.sqlite").st_mode) == 0o600

"""Two unit processes on one records folder (issue 16 item 2): the second owner is refused with one sentence and
touches nothing; readers still open it; the lock goes with the process, even after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from device.errors import HardwareError
from device.records import IMAGES_DIR, LOCK_FILE, ORPHANS_DIR, RecordStore

HOLDER = textwrap.dedent("""
    import sys
    from device.records import RecordStore
    store = RecordStore(sys.argv[1], fsync=False)
    print("ready", flush=True)
    sys.stdin.read()  # hold the folder until the test closes stdin (or kills us)
""")


def _in_flight(folder):
    """An image the owner wrote but has not committed a record for yet (what recovery used to move away)."""
    path = folder / IMAGES_DIR / "S1" / "abc_photo.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 in flight \xff\xd9")
    return path


def test_a_second_owner_in_another_process_is_refused_and_touches_nothing(tmp_path):
    folder = tmp_path / "rec"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        photo = _in_flight(folder)
        with pytest.raises(HardwareError) as err:
            RecordStore(folder, fsync=False)
        assert str(err.value) == (f"The records folder {folder} is in use by another unit process (pid "
                                  f"{holder.pid}): stop that one first, or give this one its own records folder.")
        assert photo.is_file() and not (folder / ORPHANS_DIR).exists()  # before: moved to orphans/
        reader = RecordStore(folder, fsync=False, recover=False)  # selftest, console: may still read and audit
        reader.audit("unit", "selftest", {"ok": True})
        with pytest.raises(HardwareError):
            reader.recover()
        reader.close()
        assert photo.is_file()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    store = RecordStore(folder, fsync=False)  # the first one is gone: its unrecorded photo is now abandoned
    assert store.recovered == 1 and not photo.exists()
    store.close()


def test_the_lock_is_released_when_the_owner_is_killed(tmp_path):
    folder = tmp_path / "rec"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()
    RecordStore(folder, fsync=False).close()


def test_two_owners_in_one_process_and_close_releases(tmp_path):
    first = RecordStore(tmp_path, fsync=False)
    with pytest.raises(HardwareError, match="in use by another unit process"):
        RecordStore(tmp_path, fsync=False)
    first.close()
    second = RecordStore(tmp_path, fsync=False)
    assert (tmp_path / LOCK_FILE).read_text() == str(os.getpid())
    assert (os.stat(tmp_path / LOCK_FILE).st_mode & 0o777) == 0o600
    second.close()


def test_side_commands_beside_a_running_kiosk_never_run_its_recovery(tmp_path):
    # the same fault as item 2 through another door: `device export` and `device model ...` opened the records
    # with crash recovery, moving the kiosk's in-flight photographs to orphans/
    from device.grading_export import export_for_grading, parse_when
    from tests.helpers import screened_unit

    cfg = screened_unit(tmp_path / "unit", patients=1)
    folder = tmp_path / "unit" / "records"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        photo = _in_flight(folder)
        result = export_for_grading(cfg, parse_when("2020-01-01"), tmp_path / "pkg")
        assert result.images == 2
        assert photo.is_file() and not (folder / ORPHANS_DIR).exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

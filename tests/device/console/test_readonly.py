"""The console's database connection is read-only and never blocks the kiosk's writer (a real second process)."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import numpy as np
import pytest

from device.console.store import RecordReader
from device.console.synthetic import fill_records, result
from device.records import RecordStore

SAVES = 60
# What a save may take while the console reads: an fsync'd save is ~10 ms on a quiet disk; a blocked writer would
# wait for the 10 s busy timeout and then fail. 2 s leaves room for a loaded CI machine.
MAX_SAVE_S = 2.0


def _writer(folder: str, saves: int, out) -> None:
    store = RecordStore(folder, fsync=True)
    sid = store.start_session("kiosk", "synthetic-model", "u")
    img = np.zeros((64, 64, 3), np.uint8)
    worst, errors = 0.0, []
    for i in range(saves):
        t = time.perf_counter()
        try:
            store.save(sid, f"W{i:04d}", "right", 1, result("non_referable", 0.2), img, img, "kiosk")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(repr(exc))
        worst = max(worst, time.perf_counter() - t)
    store.close()
    out.put((worst, errors))


@pytest.fixture
def busy_records(tmp_path):
    folder = tmp_path / "records"
    fill_records(folder, visits=200, days=2)
    return folder


def test_the_connection_refuses_writes(busy_records):
    with RecordReader(busy_records) as r:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.db.execute("INSERT INTO audit (at, who, action, detail) VALUES ('x', 'x', 'x', '{}')")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.db.execute("CREATE TABLE evil (x)")


def test_an_open_read_snapshot_does_not_block_the_writer(busy_records):
    with RecordReader(busy_records) as r:
        r.db.execute("BEGIN")
        before = r.db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0]  # snapshot held open
        store = RecordStore(busy_records, fsync=True)
        sid = store.start_session("kiosk", "m", "u")
        t = time.perf_counter()
        store.save(sid, "X1", "left", 1, result("non_referable", 0.1), np.zeros((32, 32, 3), np.uint8),
                   np.zeros((32, 32, 3), np.uint8), "kiosk")
        assert time.perf_counter() - t < MAX_SAVE_S
        assert r.db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0] == before  # its snapshot
        r.db.execute("COMMIT")
        assert r.db.execute("SELECT COUNT(*) FROM screenings").fetchone()[0] == before + 1
        store.close()


def test_console_requests_while_the_kiosk_writes(busy_records):
    from device.console.auth import Credentials
    from tests.device.console.conftest import login, make_app

    Credentials.for_records(busy_records).set_password("nurse", "pin-123456")
    client = make_app(busy_records).test_client()
    login(client)
    with RecordReader(busy_records) as r:
        start = r.count()
    out = mp.get_context("spawn").Queue()
    writer = mp.get_context("spawn").Process(target=_writer, args=(str(busy_records), SAVES, out))
    writer.start()
    pages = 0
    while writer.is_alive() or pages < 5:
        for url in ("/", "/search?q=W00", "/export/screenings.csv", "/unit"):
            assert client.get(url).status_code == 200, url
            pages += 1
        if pages > 2000:
            break
    worst, errors = out.get(timeout=120)
    writer.join(60)
    assert errors == [] and writer.exitcode == 0
    assert worst < MAX_SAVE_S, f"a save took {worst:.2f} s while the console read"
    assert pages >= 5
    html = client.get("/search?q=W00").get_data(as_text=True)
    assert html.count("/patient/W00") == SAVES  # the console sees every committed record
    with RecordReader(busy_records) as r:
        assert r.count() == start + SAVES

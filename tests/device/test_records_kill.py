"""SIGKILL the unit in the middle of saving: no record is lost, duplicated or half-written."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from device.records import RecordStore

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from device.camera import draw_fundus
    from device.model import FakeModel
    from device.pipeline import screen_frame
    from device.quality import QualityGate
    from device.records import RecordStore

    store = RecordStore(sys.argv[1], fsync=True)
    sid = store.start_session("kill-test", "fake")
    photo = draw_fundus(1, 640, 480)
    result = screen_frame(photo, FakeModel(size=64), QualityGate())
    screen = np.random.default_rng(0).integers(0, 255, (480, 800, 3), dtype=np.uint8)  # ~1 MB PNG: slow to save
    i = 0
    while True:
        i += 1
        rid = store.save(sid, f"P{i:04d}", "right", 1, result, photo, screen, "kill-test")
        print(rid, flush=True)
""")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sigkill_while_saving_loses_nothing(tmp_path):
    folder = tmp_path / "records"
    confirmed: list[str] = []
    rng = np.random.default_rng(7)
    recovered_files = 0
    for round_no in range(3):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        want = int(rng.integers(2, 6))
        got = []
        while len(got) < want:
            line = proc.stdout.readline()
            assert line, "the saving process died on its own"
            got.append(line.strip())
        time.sleep(float(rng.uniform(0.0, 0.05)))  # land somewhere inside the next save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        got += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
        confirmed += got

        store = RecordStore(folder)  # reopening runs crash recovery
        recovered_files += store.recovered
        rows = store.screenings()
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)), "a record was duplicated"
        assert set(confirmed) <= set(ids), "a record reported as saved was lost"
        assert len(ids) - len(confirmed) <= round_no + 1, "more unconfirmed records than interrupted saves"
        for r in rows:  # every record is whole: both images present and exactly what was hashed
            assert _sha(folder / r["photo_path"]) == r["photo_sha256"]
            assert _sha(folder / r["screen_path"]) == r["screen_sha256"]
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        screened = [a for a in store.audit_trail() if a["action"] == "screened"]
        assert sorted(a["record_id"] for a in screened) == sorted(ids)
        assert not list((folder / "images").rglob("*.tmp"))
        referenced = {r["photo_path"] for r in rows} | {r["screen_path"] for r in rows}
        on_disk = {str(p.relative_to(folder)) for p in (folder / "images").rglob("*") if p.is_file()}
        assert on_disk == referenced, "image files without a record were left among the records"
        store.close()

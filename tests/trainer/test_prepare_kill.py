"""``prepare`` killed with SIGKILL mid-run (workers and all) leaves a cache that a re-run completes correctly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from device.imageio import load_image
from device.preprocess import preprocess
from trainer.data.cache import JOURNAL, MANIFEST, CacheError, TrainingCache
from trainer.data.prepare import PrepareConfig, prepare
from trainer.synthetic.writers import write_kaggle_folder

REPO = Path(__file__).resolve().parents[2]
SIZE = 128
KILL_AFTER = 4  # journal lines (finished images) before the kill
TIMEOUT_S = 90


def _journal_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes_a_valid_cache(tmp_path: Path) -> None:
    source, out = tmp_path / "kaggle", tmp_path / "cache"
    rows = write_kaggle_folder(source, 20, size=480, seed=3)  # 40 photographs, ~40 ms each to preprocess
    command = [sys.executable, "-m", "trainer", "prepare", str(source), "--out", str(out), "--size", str(SIZE),
               "--workers", "2", "--quiet"]
    # Own session, so the kill reaches the pool's worker processes too (as a power cut would).
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while _journal_lines(out / JOURNAL) < KILL_AFTER:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "prepare made no progress"
            time.sleep(0.01)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone: the assertion above says why
            pass
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    done_before = _journal_lines(out / JOURNAL)
    assert KILL_AFTER <= done_before < len(rows), "the kill came too late to test anything"
    assert not (out / MANIFEST).exists()
    with pytest.raises(CacheError, match="is incomplete \\(prepare did not finish\\); re-run"):
        TrainingCache.open(out)

    summary = prepare(PrepareConfig(source=source, out=out, size=SIZE, workers=1, progress=False))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["last_run"]["processed"] == len(rows) - done_before  # finished images were not redone
    assert summary["images"] == len(rows) and summary["skipped"] == 0
    assert not list(out.rglob("*.tmp"))  # half-written files of the killed run are gone
    cache = TrainingCache.open(out)
    rgb, mask = cache.read_many([r.image_id for r in cache.records()])
    assert rgb.shape == (len(rows), SIZE, SIZE, 3) and mask.any(axis=(1, 2)).all()
    for k in (0, len(rows) - 1):  # spot check: bit-identical to the shared preprocessing
        expected = preprocess(load_image(source / "train" / f"{rows[k][0]}.jpeg"), size=SIZE)
        index = [r.image_id for r in cache.records()].index(rows[k][0])
        np.testing.assert_array_equal(rgb[index], expected.rgb)

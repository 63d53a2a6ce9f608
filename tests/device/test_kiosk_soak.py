"""Soak: 1,000 photographs through the kiosk loop with fakes; memory must stay flat."""

from __future__ import annotations

import gc
import time

import psutil
import pytest

from device.camera import FakeCamera, draw_fundus
from device.config import parse_config
from device.display import FakeDisplay, FakeDisplayConfig
from device.kiosk import Kiosk
from device.model import FakeModel
from device.records import RecordStore
from firmware_bridge.fake import FakeLink

SOAK_IMAGES = 1000
WARM_UP = 100  # screenings before the baseline: caches, fonts and SQLite pages fill up first
MAX_RSS_GROWTH_MB = 15.0  # from screening 100 to 1,000; a leak of one 240x240 frame per screening is 170 MB


@pytest.mark.slow
def test_soak_1000_screenings_memory_flat(tmp_path):
    frames = [draw_fundus(i, 240, 240) for i in range(7)] + [(draw_fundus(7, 240, 240) * 0.1).astype("uint8")]
    cfg = parse_config({"records": {"folder": str(tmp_path), "fsync": False, "min_free_mb": 0},
                        "kiosk": {"trigger": "auto", "poll_interval_s": 0.0}})
    store = RecordStore(tmp_path, fsync=False)
    display = FakeDisplay(FakeDisplayConfig(width=160, height=120))
    kiosk = Kiosk(cfg, FakeCamera(frames=frames), FakeModel(size=64), display, FakeLink(), store)
    proc = psutil.Process()
    kiosk.run(max_screenings=WARM_UP)
    gc.collect()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    summary = kiosk.run(max_screenings=SOAK_IMAGES)
    elapsed = time.perf_counter() - t0
    gc.collect()
    growth_mb = (proc.memory_info().rss - rss0) / 2 ** 20
    print(f"\nsoak: {SOAK_IMAGES} screenings, RSS growth {growth_mb:+.1f} MiB after warm-up, "
          f"{1000 * elapsed / (SOAK_IMAGES - WARM_UP):.1f} ms per screening")
    assert summary.screenings == SOAK_IMAGES and summary.errors == []
    assert len(store.screenings()) == SOAK_IMAGES
    assert summary.verdicts.get("ungradable", 0) > 0  # the dark frame went through the retake path
    assert growth_mb < MAX_RSS_GROWTH_MB

"""Peak memory of screening one photograph, by photograph size, up to the largest the unit accepts.

Each size runs in a fresh process: load the model (with its self-test), then read the photograph file, screen
it (preprocess, gate, inference, regions), render the result screen and save the record (JPEG + PNG + SQLite),
as the kiosk does for one capture. The peak resident set size (``VmHWM`` in /proc/self/status, Linux) is read
before the photograph is read and after it is saved; the difference is what one photograph costs. The last row
is a 20000 x 20000 PNG (a decompression bomb of about 0.4 MB) that the unit refuses from its header.

    python bench/bench_memory.py                  # bundled default model; prints a table
    python bench/bench_memory.py --model models/<id>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, width, height): a small camera, common fundus camera sensors, and the largest photograph accepted.
SIZES = (("1 MP", 1280, 960), ("5 MP", 2592, 1944), ("12 MP", 4000, 3000), ("24 MP", 6000, 4000))
UNIT_RAM_MB = 2048  # the smallest unit the docs support (Raspberry Pi 4/5 with 2 GB)

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from device.errors import ScreeningError
from device.imageio import load_image
from device.model.bundle import default_model_dir, load_bundle
from device.pipeline import screen_frame
from device.quality import QualityGate
from device.records import RecordStore
from device.screen_render import render_result

def rss_mb():
    # VmHWM: this process's peak resident set (ru_maxrss would carry over the parent's peak across exec).
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

model = load_bundle(sys.argv[3] if sys.argv[3] != "-" else default_model_dir(), run_selftest=True)
gate = QualityGate()
with tempfile.TemporaryDirectory() as tmp:
    store = RecordStore(tmp, fsync=True)
    sid = store.start_session("bench", model.contract.id)
    before = rss_mb()
    t = time.perf_counter()
    out = {"before_mb": before}
    try:
        rgb = load_image(sys.argv[2])
        result = screen_frame(rgb, model, gate)
        screen = render_result(result, rgb, (800, 480), "bench")
        store.save(sid, "P0001", "right", 1, result, rgb, screen, "bench")
        out["outcome"] = result.verdict.value
    except ScreeningError as exc:
        out["outcome"] = "refused: " + str(exc)[:60]
    out["seconds"] = time.perf_counter() - t
    out["peak_mb"] = rss_mb()
    store.close()
print(json.dumps(out))
"""


def make_photo(path: Path, width: int, height: int) -> None:
    import cv2

    from device.camera import draw_fundus

    rgb = draw_fundus(7, width, height)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def make_bomb(path: Path, side: int = 20000) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def measure(photo: Path, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(photo), model], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="-", help="bundle folder (default: the bundled default model)")
    args = parser.parse_args(argv)
    from device.imageio import MAX_IMAGE_PIXELS

    side_w = int((MAX_IMAGE_PIXELS * 4 / 3) ** 0.5) // 16 * 16
    sizes = (*SIZES, (f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP (largest accepted)", side_w, MAX_IMAGE_PIXELS // side_w))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, w, h in sizes:
            path = Path(tmp) / f"{w}x{h}.jpg"
            make_photo(path, w, h)
            rows.append((name, f"{w}x{h}", path.stat().st_size / 2 ** 20, measure(path, args.model)))
            path.unlink()
        bomb = Path(tmp) / "bomb.png"
        make_bomb(bomb)
        rows.append(("400 MP PNG bomb", "20000x20000", bomb.stat().st_size / 2 ** 20, measure(bomb, args.model)))
    base = rows[0][3]["peak_mb"] - rows[0][3]["before_mb"]
    print(f"{'photograph':28s} {'pixels':>12s} {'file MB':>8s} {'before MB':>10s} {'peak MB':>8s} {'+MB':>7s} "
          f"{'+ / 1 MP':>9s} {'peak / 2 GB':>11s} {'s':>6s}  outcome")
    for name, px, mb, r in rows:
        extra = r["peak_mb"] - r["before_mb"]
        print(f"{name:28s} {px:>12s} {mb:8.1f} {r['before_mb']:10.0f} {r['peak_mb']:8.0f} {extra:7.0f} "
              f"{extra / max(base, 1):9.1f} {r['peak_mb'] / UNIT_RAM_MB:11.2f} {r['seconds']:6.2f}  {r['outcome']}")
    print(f"(one run, {time.strftime('%Y-%m-%d %H:%M')}; peak = VmHWM of a fresh process per photograph)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate the demo's sample photographs ONCE (committed as small JPEGs; our own synthetic images, no licensed data).

    python samples/make_samples.py          # rewrites samples/*.jpg and prints the quality gate's view of each

The file names put the photographs in the order the demo's folder camera serves them: both eyes of four patients,
with retakes. Patients 2 and 3 each need one retake (blurred, too dark); patient 4's right eye stays ungradable
after the demo config's single retake (not a fundus photograph, then over-exposed), so it is referred.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ lives beside the installed packages, not in them

from bench.quality_data import degrade
from device.errors import ImageError
from device.preprocess import preprocess
from device.quality import GATE_SIZE, QualityGate
from trainer.synthetic import generate_fundus

WIDTH, HEIGHT, JPEG_QUALITY = 1024, 768, 90
# (file stem, seed, grade, eye, degradation or None)
PLAN = [
    ("01_p1_right", 101, 0, "right", None),
    ("02_p1_left", 102, 0, "left", None),
    ("03_p2_right_blurred", 103, 3, "right", "blurred"),
    ("04_p2_right", 103, 3, "right", None),
    ("05_p2_left", 105, 2, "left", None),
    ("06_p3_right_dark", 106, 0, "right", "dark"),
    ("07_p3_right", 106, 0, "right", None),
    ("08_p3_left", 108, 1, "left", None),
    ("09_p4_right_not_fundus", 109, 2, "right", "non_fundus"),
    ("10_p4_right_overexposed", 109, 2, "right", "over_exposed"),
    ("11_p4_left", 111, 4, "left", None),
]


def make(stem: str, seed: int, grade: int, eye: str, bad: str | None) -> np.ndarray:
    """One sample photograph (RGB uint8)."""
    rgb = generate_fundus(seed, width=WIDTH, height=HEIGHT, grade=grade, eye=eye).image
    if bad == "blurred":
        fov = preprocess(rgb, size=64).fov
        return cv2.GaussianBlur(rgb, (0, 0), 0.01 * 2 * fov.radius)
    return degrade(rgb, bad, seed) if bad else rgb


def main() -> int:
    out = Path(__file__).resolve().parent
    for old in out.glob("*.jpg"):
        old.unlink()
    gate = QualityGate()
    for stem, seed, grade, eye, bad in PLAN:
        rgb = make(stem, seed, grade, eye, bad)
        path = out / f"{stem}.jpg"
        cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        try:
            back = cv2.imread(str(path))[..., ::-1]
            report = gate.assess(back, preprocess(back, size=GATE_SIZE))
            verdict = "gradable" if report.gradable else "; ".join(report.reasons)
        except ImageError as exc:
            verdict = f"no retina ({exc})"
        print(f"{path.name:32s} {path.stat().st_size // 1024:4d} KiB  grade {grade}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

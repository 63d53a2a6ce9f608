"""Calibrate and check the quality gate on real photographs and degraded copies of them.

Good set: the 10 original Kaggle photographs and the 89 DiaretDB1 images (../shared/data, read-only, never
copied). Bad set: from each good image, blurred, dark, over-exposed, hazy (low contrast), glare, off-centre,
partial and non-fundus versions, generated in memory. Prints every metric's range per variant and the confusion
table of the gate's current thresholds (device/quality.py); with ``--csv`` writes all measurements.

    python bench/calibrate_quality.py                    # all 99 images (a few minutes on 2 cores)
    python bench/calibrate_quality.py --limit 6 --csv out/quality.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

from device.errors import BlankImageError, NotFundusError
from device.imageio import load_image
from device.preprocess import preprocess
from device.quality import GATE_SIZE, QualityGate, measure

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KAGGLE = SHARED / "eyepacs_kaggle_sample" / "sample"
DDB1 = SHARED / "diaretdb1" / "diaretdb1_v_1_1" / "resources" / "images" / "ddb1_fundusimages"
# Degraded copies are made at this long side (the gate itself is resolution independent).
WORK_LONG_SIDE = 1536
# Degradation strengths, each a plainly ungradable photograph: blur sigma 0.5 % of the FOV diameter (≈ 2.5 px
# at the gate's 512 px scale), exposure x0.2 (flash too weak) / a gain that lifts the mean luminance to 200 (sensor
# saturated; a fixed gain would merely correct an already dark photograph), haze = 90 % flat (fogged lens), glare =
# a saturated flare covering ~6 % of the FOV, off-centre = FOV centre moved by 0.45 radii, partial = 45 % of the
# disc outside the frame.
BLUR_SIGMA_FRACTION = 0.005
DARK_GAIN, BRIGHT_TARGET_LUMA = 0.2, 200.0
HAZE_WEIGHT = 0.9
GLARE_RADIUS_FRACTION = 0.25
OFF_CENTRE_RADII = 0.45
PARTIAL_SHIFT_RADII = 0.9
VARIANTS = ("original", "blurred", "dark", "over_exposed", "hazy", "glare", "off_centre", "partial", "non_fundus")


def good_images(limit: int | None = None) -> list[Path]:
    """The real images that must pass (Kaggle originals first), at most ``limit`` from each set."""
    kaggle = sorted(KAGGLE.glob("*.jpeg"))
    ddb1 = sorted(DDB1.glob("image*.png"))
    if limit is not None:
        kaggle, ddb1 = kaggle[:limit], ddb1[:: max(1, len(ddb1) // limit)][:limit]
    return kaggle + ddb1


def _shift(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the picture by (dx, dy) pixels inside the same frame, filling with black."""
    h, w = rgb.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def degrade(rgb: np.ndarray, variant: str, seed: int = 0) -> np.ndarray:
    """One degraded version of a good photograph (see the constants above)."""
    if variant == "original":
        return rgb
    fov = preprocess(rgb, size=64).fov
    r = fov.radius
    x = rgb.astype(np.float32)
    if variant == "blurred":
        return cv2.GaussianBlur(rgb, (0, 0), BLUR_SIGMA_FRACTION * 2 * r)
    if variant == "dark":
        return np.clip(x * DARK_GAIN, 0, 255).astype(np.uint8)
    if variant == "over_exposed":
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[fov.mask()]
        return np.clip(x * (BRIGHT_TARGET_LUMA / max(1.0, float(luma.mean()))), 0, 255).astype(np.uint8)
    mask = fov.mask()
    if variant == "hazy":
        out = x.copy()
        out[mask] = (1 - HAZE_WEIGHT) * x[mask] + HAZE_WEIGHT * x[mask].mean()
        return out.astype(np.uint8)
    if variant == "glare":
        rng = np.random.default_rng(seed)
        a = rng.uniform(0, 2 * np.pi)
        c = (int(fov.cx + 0.4 * r * np.cos(a)), int(fov.cy + 0.4 * r * np.sin(a)))
        out = rgb.copy()
        cv2.circle(out, c, int(GLARE_RADIUS_FRACTION * r), (255, 255, 255), -1, lineType=cv2.LINE_AA)
        return out
    if variant == "off_centre":
        # Black added on the right and bottom only: the whole disc stays in the frame, its centre moves
        # OFF_CENTRE_RADII radii (diagonally) away from the frame centre.
        pad = int(round(2 * OFF_CENTRE_RADII * r / np.sqrt(2)))
        return cv2.copyMakeBorder(rgb, 0, pad, 0, pad, cv2.BORDER_CONSTANT, value=0)
    if variant == "partial":
        return _shift(rgb, int(PARTIAL_SHIFT_RADII * r), 0)
    if variant == "non_fundus":
        # The retina's own pixels, cut into 8x8 tiles, shuffled and spread over the whole frame: real colours
        # and texture, but no round field of view on a dark background.
        x0, y0 = max(0, int(fov.cx - r)), max(0, int(fov.cy - r))
        square = rgb[y0:int(fov.cy + r), x0:int(fov.cx + r)]
        square = cv2.resize(square, (rgb.shape[1], rgb.shape[0]))
        th, tw = rgb.shape[0] // 8, rgb.shape[1] // 8
        tiles = [square[i * th:(i + 1) * th, j * tw:(j + 1) * tw] for i in range(8) for j in range(8)]
        np.random.default_rng(seed).shuffle(tiles)
        rows = [np.concatenate(tiles[i * 8:(i + 1) * 8], axis=1) for i in range(8)]
        return np.ascontiguousarray(np.concatenate(rows, axis=0))
    raise ValueError(f"Unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")


def assess_variant(gate: QualityGate, rgb: np.ndarray) -> tuple[bool, list[str], dict[str, float]]:
    """Run the gate on one photograph: (gradable, failed-check keys, metrics)."""
    try:
        pre = preprocess(rgb, size=GATE_SIZE)
    except BlankImageError:
        return False, ["blank"], {}
    except NotFundusError:
        return False, ["no_fov"], {}
    metrics = measure(rgb, pre)
    keys = gate.failures(metrics)
    return not keys, keys, metrics


def work_copy(rgb: np.ndarray) -> np.ndarray:
    """Downscale to WORK_LONG_SIDE (degradations are defined relative to the FOV, so scale does not matter)."""
    h, w = rgb.shape[:2]
    s = WORK_LONG_SIDE / max(h, w)
    return rgb if s >= 1 else cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def calibrate(paths: list[Path], gate: QualityGate | None = None, progress: bool = True) -> list[dict]:
    """Measure every variant of every image; one row per (image, variant) with pass/fail and the metrics."""
    from tqdm import tqdm

    gate = gate or QualityGate()
    rows = []
    for i, path in enumerate(tqdm(paths, disable=not progress, desc="calibrating")):
        full = load_image(path)
        small = work_copy(full)
        for variant in VARIANTS:
            img = full if variant == "original" else degrade(small, variant, seed=i)
            ok, keys, metrics = assess_variant(gate, img)
            rows.append({"image": path.name, "variant": variant, "gradable": ok, "failed": "+".join(keys),
                         **{k: round(v, 5) for k, v in metrics.items()}})
    return rows


def confusion(rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Per variant: (passed, failed) counts. 'original' must all pass, the others must all fail."""
    out: dict[str, tuple[int, int]] = {}
    for v in VARIANTS:
        sel = [r for r in rows if r["variant"] == v]
        out[v] = (sum(r["gradable"] for r in sel), sum(not r["gradable"] for r in sel))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="images per set (default: all)")
    parser.add_argument("--csv", type=Path, default=None, help="write all measurements here")
    args = parser.parse_args(argv)
    paths = good_images(args.limit)
    if not paths:
        print(f"No real images under {SHARED}: this script needs ../shared/data.", file=sys.stderr)
        return 1
    rows = calibrate(paths)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    print(f"\n{len(paths)} real images, {len(rows)} photographs assessed\n")
    print("| variant | expected | gradable | ungradable | correct | main reasons |")
    print("|---|---|---:|---:|---:|---|")
    for v, (p, f) in confusion(rows).items():
        reasons: dict[str, int] = {}
        for r in rows:
            if r["variant"] == v and r["failed"]:
                reasons[r["failed"]] = reasons.get(r["failed"], 0) + 1
        top = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        print(f"| {v} | {'pass' if v == 'original' else 'fail'} | {p} | {f} | "
              f"{p if v == 'original' else f}/{p + f} | {top} |")
    metrics = ("centre_offset", "coverage", "mean_luma", "contrast", "focus", "glare", "red_clipped")
    print("\n| variant | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    for v in VARIANTS:
        cells = []
        for m in metrics:
            vals = [r[m] for r in rows if r["variant"] == v and m in r]
            cells.append(f"{min(vals):.4g}–{max(vals):.4g}" if vals else "—")
        print(f"| {v} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

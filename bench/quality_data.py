"""The photographs the quality gate is measured on: real sources with their labels, and degraded copies of them.

Sources (../shared/data, read-only, never copied):

* ``eyeq``: the 638 EyePACS images of ``eyepacs_256`` that EyeQ experts graded (0 Good / 1 Usable / 2 Reject).
  They are third-party 256x256 reductions of the full-resolution photographs that EyeQ graded.
* ``idrid``: the 413 IDRiD training photographs (Kowa VX-10α, 964x640 copies): all clinically graded, gradable.
* ``diaretdb1``: the 89 DiaretDB1 photographs (1500x1152): gradable.
* ``kaggle``: the 10 original full-resolution Kaggle photographs (4 cameras): gradable.

Degraded copies are made from every gradable photograph (EyeQ Good and the three other sources), in memory, by
:func:`degrade`; each kind must be called ungradable with its own reason (``EXPECTED``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.fov import disc_mask, find_fov

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EYEQ = SHARED / "eyepacs_256"
IDRID = SHARED / "idrid_grading_train" / "images"
DDB1 = SHARED / "diaretdb1" / "diaretdb1_v_1_1" / "resources" / "images" / "ddb1_fundusimages"
KAGGLE = SHARED / "eyepacs_kaggle_sample" / "sample"
SOURCES = ("eyeq", "idrid", "diaretdb1", "kaggle")
GRADES = ("Good", "Usable", "Reject")  # EyeQ's 0 / 1 / 2

# Degraded copies are made at most at this long side (each degradation is defined relative to the FOV).
WORK_LONG_SIDE = 1536
# Degradation strengths, each a plainly ungradable photograph: blur sigma 0.5 % of the FOV diameter (≈ 2.5 px
# at 512 px across the retina), exposure x0.2 (flash too weak) / a gain that lifts the mean luminance to 200
# (sensor saturated), haze = 90 % flat (fogged lens), glare = a saturated flare of 25 % of the FOV radius,
# off-centre = FOV centre moved by 0.45 radii, partial = the photograph shifted sideways by 0.9 radii,
# low resolution = the FOV only LOW_RES_FOV_PX pixels across, centred in a frame of at least LOW_RES_FRAME
# (a phone adapter far from the eye, a webcam, a thumbnail).
BLUR_SIGMA_FRACTION = 0.005
DARK_GAIN, BRIGHT_TARGET_LUMA = 0.2, 200.0
HAZE_WEIGHT = 0.9
HAZE_RIM_FRACTION = 0.03
GLARE_RADIUS_FRACTION = 0.25
OFF_CENTRE_RADII = 0.45
PARTIAL_SHIFT_RADII = 0.9
LOW_RES_FOV_PX = 150
LOW_RES_FRAME = (320, 240)  # (W, H)
VARIANTS = ("blurred", "dark", "over_exposed", "hazy", "glare", "off_centre", "partial", "non_fundus",
            "low_resolution")
# The reason keys (device.quality.REASONS) that count as "the right reason" for each kind of degraded copy.
# A partial photograph may also be refused as "no retina" or "not centred": the nurse is asked to do the same.
EXPECTED = {
    "blurred": {"focus"},
    "dark": {"dark", "blank"},
    "over_exposed": {"bright"},
    "hazy": {"contrast"},
    "glare": {"glare"},
    "off_centre": {"off_centre"},
    "partial": {"partial", "off_centre", "no_fov"},
    "non_fundus": {"no_fov"},
    "low_resolution": {"resolution"},
}


@dataclass(frozen=True)
class Photo:
    """One real photograph: its source, name (unique within the source), path and EyeQ grade (None: gradable)."""

    source: str
    name: str
    path: Path
    grade: int | None = None

    @property
    def group(self) -> str:
        """Patient identifier: both eyes of one patient go to the same cross-validation fold."""
        if self.source.startswith("eyeq"):
            return self.source + ":" + self.name.split("_")[0]
        if self.source == "kaggle":
            return "kaggle:" + self.name.split("_")[0]
        return f"{self.source}:{self.name}"


def photos(sources: tuple[str, ...] = SOURCES, limit: int | None = None) -> list[Photo]:
    """The real photographs present under ../shared/data, at most ``limit`` per source (spread over it)."""
    out: list[Photo] = []
    for source in sources:
        items: list[Photo] = []
        if source == "eyeq" and (EYEQ / "eyeq_quality.csv").exists():
            with (EYEQ / "eyeq_quality.csv").open() as fh:
                for row in csv.DictReader(fh):
                    items.append(Photo("eyeq", row["image"], EYEQ / "images" / f"{row['image']}.jpeg",
                                       int(row["quality"])))
            items.sort(key=lambda p: p.name)
        elif source == "idrid":
            items = [Photo("idrid", p.stem, p) for p in sorted(IDRID.glob("*.jpg"))]
        elif source == "diaretdb1":
            items = [Photo("diaretdb1", p.stem, p) for p in sorted(DDB1.glob("image*.png"))]
        elif source == "kaggle":
            items = [Photo("kaggle", p.stem, p) for p in sorted(KAGGLE.glob("*.jpeg"))]
        if limit is not None and len(items) > limit:
            items = items[:: len(items) // limit][:limit]
        out.extend(items)
    return out


def gradable(photo: Photo) -> bool:
    """True for photographs that experts call gradable: EyeQ Good, and every IDRiD, DiaretDB1 and Kaggle image."""
    return photo.grade is None or photo.grade == 0


def work_copy(rgb: np.ndarray) -> np.ndarray:
    """Downscale to WORK_LONG_SIDE (degradations are defined relative to the FOV, so scale does not matter)."""
    h, w = rgb.shape[:2]
    s = WORK_LONG_SIDE / max(h, w)
    return rgb if s >= 1 else cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _shift(rgb: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the picture by (dx, dy) pixels inside the same frame, filling with black."""
    h, w = rgb.shape[:2]
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def degrade(rgb: np.ndarray, variant: str, seed: int = 0) -> np.ndarray:
    """One degraded version of a good photograph (see the constants above)."""
    if variant == "original":
        return rgb
    fov = find_fov(rgb)
    r = fov.radius
    x = rgb.astype(np.float32)
    if variant == "blurred":
        return cv2.GaussianBlur(rgb, (0, 0), BLUR_SIGMA_FRACTION * 2 * r)
    if variant == "dark":
        return np.clip(x * DARK_GAIN, 0, 255).astype(np.uint8)
    mask = fov.mask()
    if variant == "over_exposed":
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[mask]
        return np.clip(x * (BRIGHT_TARGET_LUMA / max(1.0, float(luma.mean()))), 0, 255).astype(np.uint8)
    if variant == "hazy":
        # The veil covers the whole illuminated disc, its soft rim included (the FOV mask stops just inside it).
        lit = disc_mask(rgb.shape[:2], fov.cx, fov.cy, fov.radius * (1 + HAZE_RIM_FRACTION)) & (rgb.max(axis=2) > 0)
        out = x.copy()
        out[lit] = (1 - HAZE_WEIGHT) * x[lit] + HAZE_WEIGHT * x[mask].mean(axis=0)
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
    if variant == "low_resolution":
        s = LOW_RES_FOV_PX / (2 * r)
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        dy = max(0, LOW_RES_FRAME[1] - small.shape[0])
        dx = max(0, LOW_RES_FRAME[0] - small.shape[1])
        return cv2.copyMakeBorder(small, dy // 2, dy - dy // 2, dx // 2, dx - dx // 2, cv2.BORDER_CONSTANT, value=0)
    raise ValueError(f"Unknown variant {variant!r}; use one of {', '.join(VARIANTS)}.")


def copies(photo: Photo, rgb: np.ndarray, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """(variant, image): the original, then, for a gradable photograph, each degraded copy."""
    yield "original", rgb
    if not gradable(photo):
        return
    small = work_copy(rgb)
    for variant in VARIANTS:
        yield variant, degrade(small, variant, seed)


def extra_eyeq(labels: Path, images: Path) -> list[Photo]:
    """EyeQ-graded photographs outside ../shared/data (an independent test).

    Args:
        labels: CSV with ``image,quality`` rows (EyeQ grades 0 / 1 / 2).
        images: folder holding ``<image>.jpeg``; listed images that are absent are left out.
    """
    with Path(labels).open() as fh:
        rows = list(csv.DictReader(fh))
    found = [Photo("eyeq_extra", r["image"], Path(images) / f"{r['image']}.jpeg", int(r["quality"])) for r in rows]
    return [p for p in found if p.path.exists()]

"""Lesions of the four DiaretDB1 types: sampling, drawing with exact masks, and the DR grade they imply.

Sizes are diameters at the reference scale (FOV radius 235 px, a 512 px square photograph) and scale with the FOV
radius. They follow what DiaretDB1 experts mark at that resolution: microaneurysms ("red small dots") 1-3 px,
dot/blot haemorrhages 4-25 px, hard exudates as clusters of small bright yellow dots, cotton-wool spots ("soft
exudates") 10-30 px with fuzzy borders.

Grade rule (a simplified international clinical DR scale; the generator draws no new vessels, so grade 4 is a
stand-in):
    0  no lesion;
    1  red small dots only (microaneurysms only: mild non-proliferative DR);
    2  any haemorrhage, hard exudate or soft exudate, short of grade 3 (moderate);
    3  >= 10 haemorrhages spread over all four quadrants around the FOV centre (the "4-2-1 rule": severe);
    4  grade 3 and >= 3 soft exudates (stand-in for proliferative DR).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from trainer.data.diaretdb1_layout import LESION_TYPES

# Diameter ranges in px at the reference scale (see module docstring).
RED_DOT_DIAMETER = (1.0, 3.0)
HAEMORRHAGE_DIAMETER = (4.0, 25.0)
HARD_EXUDATE_DOT_DIAMETER = (1.5, 6.0)
HARD_EXUDATE_CLUSTER_RADIUS = (8.0, 30.0)
SOFT_EXUDATE_DIAMETER = (10.0, 30.0)
# Grade rule thresholds (module docstring).
SEVERE_HAEMORRHAGES = 10
PROLIFERATIVE_SOFT_EXUDATES = 3
# Lesions keep this fraction of the FOV radius from the rim.
PLACEMENT_RADIUS = 0.9

# Lesion counts per requested grade: (low, high) inclusive, drawn uniformly.
COUNT_RANGES: dict[int, dict[str, tuple[int, int]]] = {
    0: {"haemorrhages": (0, 0), "hard_exudates": (0, 0), "soft_exudates": (0, 0), "red_small_dots": (0, 0)},
    1: {"haemorrhages": (0, 0), "hard_exudates": (0, 0), "soft_exudates": (0, 0), "red_small_dots": (1, 8)},
    2: {"haemorrhages": (1, 6), "hard_exudates": (0, 3), "soft_exudates": (0, 2), "red_small_dots": (0, 10)},
    3: {"haemorrhages": (10, 18), "hard_exudates": (0, 4), "soft_exudates": (0, 2), "red_small_dots": (3, 15)},
    4: {"haemorrhages": (12, 24), "hard_exudates": (1, 5), "soft_exudates": (3, 6), "red_small_dots": (5, 20)},
}


@dataclass(frozen=True)
class Lesion:
    """One drawn lesion (for hard exudates: one cluster). Coordinates in pixels of the photograph."""

    lesion_type: str
    x: float
    y: float
    diameter: float  # px; for a hard-exudate cluster, twice its radius


def sample_counts(rng: np.random.Generator, grade: int) -> dict[str, int]:
    """Lesion counts per type that produce ``grade`` under the module's grade rule.

    Args:
        rng: random stream.
        grade: requested DR grade 0..4.

    Returns:
        {lesion type: count}; hard-exudate counts are clusters.
    """
    if grade not in COUNT_RANGES:
        raise ValueError(f"grade must be 0..4, got {grade}")
    counts = {t: int(rng.integers(lo, hi + 1)) for t, (lo, hi) in COUNT_RANGES[grade].items()}
    if grade == 2 and counts["haemorrhages"] + counts["hard_exudates"] + counts["soft_exudates"] == 0:
        counts["haemorrhages"] = 1
    return counts


def grade_from_lesions(lesions: list[Lesion], fov: tuple[float, float, float]) -> int:
    """DR grade 0..4 implied by the lesions present (rule in the module docstring).

    Args:
        lesions: the lesions actually drawn (each with a non-empty mask).
        fov: (cx, cy, radius) in pixels; quadrants are taken around its centre.

    Returns:
        The grade 0..4.
    """
    n = {t: 0 for t in LESION_TYPES}
    quadrants = set()
    for lesion in lesions:
        n[lesion.lesion_type] += 1
        if lesion.lesion_type == "haemorrhages":
            quadrants.add((lesion.x >= fov[0], lesion.y >= fov[1]))
    if n["haemorrhages"] >= SEVERE_HAEMORRHAGES and len(quadrants) == 4:
        return 4 if n["soft_exudates"] >= PROLIFERATIVE_SOFT_EXUDATES else 3
    if n["haemorrhages"] + n["hard_exudates"] + n["soft_exudates"] > 0:
        return 2
    return 1 if n["red_small_dots"] > 0 else 0


class _Placer:
    """Random positions inside the FOV, away from the optic disc and from lesions of the same type."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], fov: tuple[float, float, float],
                 disc: tuple[float, float, float]):
        self.rng, self.shape, self.fov, self.disc = rng, shape, fov, disc
        self.taken: dict[str, list[tuple[float, float, float]]] = {t: [] for t in LESION_TYPES}

    def place(self, lesion_type: str, radius: float, quadrant: int | None = None,
              near: tuple[float, float, float] | None = None) -> tuple[float, float] | None:
        cx, cy, r = self.fov
        for _ in range(40):
            if near is not None and self.rng.random() < 0.7:
                x, y = near[0] + self.rng.normal(0, near[2]), near[1] + self.rng.normal(0, near[2])
            else:
                rho = (PLACEMENT_RADIUS * r - radius) * np.sqrt(self.rng.random())
                if quadrant is None:
                    phi = self.rng.uniform(0, 2 * np.pi)
                else:
                    phi = (quadrant + self.rng.uniform(0.1, 0.9)) * np.pi / 2
                x, y = cx + rho * np.cos(phi), cy + rho * np.sin(phi)
            if (x - cx) ** 2 + (y - cy) ** 2 > (PLACEMENT_RADIUS * r - radius) ** 2:
                continue
            if not (radius + 1 <= x <= self.shape[1] - radius - 2 and radius + 1 <= y <= self.shape[0] - radius - 2):
                continue
            if (x - self.disc[0]) ** 2 + (y - self.disc[1]) ** 2 < (self.disc[2] + radius + 2) ** 2:
                continue
            if any((x - a) ** 2 + (y - b) ** 2 < (radius + c + 2) ** 2 for a, b, c in self.taken[lesion_type]):
                continue
            if quadrant is not None and (x - cx) * (y - cy) == 0:
                continue
            self.taken[lesion_type].append((x, y, radius))
            return x, y
        return None


def _pt(x: float, y: float) -> tuple[int, int]:
    """Fixed-point (shift=2) integer centre for OpenCV drawing."""
    return int(round(x * 4)), int(round(y * 4))


def draw_lesions(
    rng: np.random.Generator,
    shape: tuple[int, int],
    counts: dict[str, int],
    fov: tuple[float, float, float],
    disc: tuple[float, float, float],
    macula: tuple[float, float],
    scale: float,
) -> tuple[dict[str, np.ndarray], list[Lesion]]:
    """Draw lesions into per-type strength maps.

    Args:
        rng: random stream.
        shape: (height, width) of the photograph.
        counts: {lesion type: number of lesions} (hard exudates: clusters).
        fov: (cx, cy, radius) of the field of view in pixels.
        disc: optic disc (x, y, radius) in pixels; lesions avoid it.
        macula: macula centre (x, y); hard-exudate clusters gather around it.
        scale: FOV radius / 235.

    Returns:
        (strength, lesions): ``uint8`` (H, W) map per type (0 = no lesion, >0 = lesion with that opacity; the exact
        mask is ``strength > 0``), and the list of lesions drawn.
    """
    placer = _Placer(rng, shape, fov, disc)
    maps = {t: np.zeros(shape, np.uint8) for t in LESION_TYPES}
    lesions: list[Lesion] = []

    for _ in range(counts.get("red_small_dots", 0)):
        d = rng.uniform(*RED_DOT_DIAMETER) * scale
        radius = int(round((d - 1) / 2))
        pos = placer.place("red_small_dots", radius + 0.5)
        if pos is not None:
            cv2.circle(maps["red_small_dots"], (int(pos[0]), int(pos[1])), radius, int(rng.integers(170, 256)), -1)
            lesions.append(Lesion("red_small_dots", int(pos[0]), int(pos[1]), 2 * radius + 1))

    for i in range(counts.get("haemorrhages", 0)):
        d = rng.uniform(*HAEMORRHAGE_DIAMETER) * scale
        pos = placer.place("haemorrhages", d / 2, quadrant=i % 4)
        if pos is None:
            continue
        value = int(rng.integers(160, 241))
        for _ in range(int(rng.integers(1, 4))):
            off = rng.normal(0, d / 10, 2)
            axes = (max(0.5, d / 2 * rng.uniform(0.6, 0.95)), max(0.5, d / 2 * rng.uniform(0.4, 0.8)))
            axes = (min(axes[0], d / 2 - abs(off).max()), min(axes[1], d / 2 - abs(off).max()))
            cv2.ellipse(maps["haemorrhages"], _pt(pos[0] + off[0], pos[1] + off[1]),
                        (max(0, int(axes[0] * 4)), max(0, int(axes[1] * 4))), float(rng.uniform(0, 180)), 0, 360,
                        value, -1, cv2.LINE_8, shift=2)
        lesions.append(Lesion("haemorrhages", pos[0], pos[1], d))

    for _ in range(counts.get("hard_exudates", 0)):
        cluster_r = rng.uniform(*HARD_EXUDATE_CLUSTER_RADIUS) * scale
        pos = placer.place("hard_exudates", cluster_r, near=(macula[0], macula[1], 0.25 * fov[2]))
        if pos is None:
            continue
        for _ in range(int(rng.integers(4, 21))):
            d = rng.uniform(*HARD_EXUDATE_DOT_DIAMETER) * scale
            rho, phi = cluster_r * np.sqrt(rng.random()) - d / 2, rng.uniform(0, 2 * np.pi)
            x, y = pos[0] + max(rho, 0) * np.cos(phi), pos[1] + max(rho, 0) * np.sin(phi)
            axes = (int(d / 2 * 4), int(d / 2 * rng.uniform(0.6, 1.0) * 4))
            cv2.ellipse(maps["hard_exudates"], _pt(x, y), axes, float(rng.uniform(0, 180)), 0, 360,
                        int(rng.integers(170, 256)), -1, cv2.LINE_8, shift=2)
        lesions.append(Lesion("hard_exudates", pos[0], pos[1], 2 * cluster_r))

    for _ in range(counts.get("soft_exudates", 0)):
        d = rng.uniform(*SOFT_EXUDATE_DIAMETER) * scale
        pos = placer.place("soft_exudates", d / 2)
        if pos is None:
            continue
        axes = (int(d / 2 * 4), int(d / 2 * rng.uniform(0.55, 0.9) * 4))
        cv2.ellipse(maps["soft_exudates"], _pt(*pos), axes, float(rng.uniform(0, 180)), 0, 360,
                    int(rng.integers(120, 201)), -1, cv2.LINE_8, shift=2)
        lesions.append(Lesion("soft_exudates", pos[0], pos[1], d))

    return maps, lesions

"""Simulated expert annotation: turn exact lesion masks into DiaretDB1-style fused ground-truth maps.

DiaretDB1 v1.1 fuses four experts' markings into one 8-bit map per lesion type, ``21 x (sum of confidence levels)``
with Low 1 / Medium 2 / High 3 (DESIGN.md §3). The simulation keeps the property tests and the evaluator rely on:
every true lesion pixel ("core") is >= 189 (75 % confidence), while the extra ring two experts draw around a lesion
and a few doubtful marks on healthy retina stay below it:

- experts 1 and 2 trace each lesion exactly with High confidence (3 + 3);
- experts 3 and 4 mark it with High or Medium confidence and a generous outline (the lesion dilated by 1-3 px at
  512 px scale), so the core sums to >= 10 (210) and the ring to <= 6 (126);
- 0-2 doubtful spots per type are marked by one or two experts with Low or Medium confidence (<= 84).
"""

from __future__ import annotations

import cv2
import numpy as np

from trainer.data.diaretdb1_layout import FUSED_MAX, FUSED_STEP

OUTLINE_DILATION = (1.0, 3.0)  # px at the reference scale (FOV radius 235 px)
DOUBTFUL_DIAMETER = (3.0, 12.0)  # px at the reference scale


def _disc_kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def fuse_expert_map(
    rng: np.random.Generator,
    mask: np.ndarray,
    fov_mask: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Simulated four-expert fused map for one lesion type.

    Args:
        rng: random stream.
        mask: bool (H, W) exact lesion mask.
        fov_mask: bool (H, W) field of view; marks never leave it.
        scale: FOV radius / 235 (sizes tuned for a 512 px photograph).

    Returns:
        uint8 (H, W) with values in {0, 21, ..., 252}; ``>= 189`` exactly on ``mask``.
    """
    levels = np.zeros(mask.shape, np.uint8)  # summed confidence levels, 0..12
    n_labels, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n_labels > 1:
        levels[mask] = 6  # experts 1 and 2: exact outline, High
        for _ in range(2):  # experts 3 and 4
            per_lesion = rng.choice(np.array([3, 3, 2], np.uint8), size=n_labels)
            per_lesion[0] = 0
            radius = max(1, int(round(rng.uniform(*OUTLINE_DILATION) * scale)))
            levels += cv2.dilate(per_lesion[labels], _disc_kernel(radius))
    ys, xs = np.nonzero(fov_mask)
    for _ in range(int(rng.integers(0, 3))):
        i = int(rng.integers(len(ys)))
        radius = max(1, int(round(rng.uniform(*DOUBTFUL_DIAMETER) * scale / 2)))
        spot = np.zeros(mask.shape, np.uint8)
        cv2.circle(spot, (int(xs[i]), int(ys[i])), radius, 1, -1)
        spot[levels > 0] = 0  # doubtful marks never touch a lesion or its outline
        n_experts = int(rng.integers(1, 3))
        levels += spot * np.uint8(sum(int(rng.integers(1, 3)) for _ in range(n_experts)))
    levels[~fov_mask] = 0
    return np.minimum(levels.astype(np.uint16) * FUSED_STEP, FUSED_MAX).astype(np.uint8)

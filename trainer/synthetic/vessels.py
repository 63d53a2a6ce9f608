"""Branching retinal vessel tree drawn from the optic disc (four arcades of veins and arteries).

The tree is a set of random walks with a steady curvature: the temporal arcades bend around the macula, the nasal
ones run out towards the nasal rim. Branches spawn thinner children at random points. Drawing uses OpenCV
anti-aliased lines on a ``uint8`` map, which keeps a 512 px tree at about a millisecond.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Sizes at the reference scale (FOV radius 235 px, i.e. a 512 px square photograph); multiplied by ``scale``.
MAIN_VEIN_WIDTH = 5.5  # px near the disc (retinal veins ~125 µm, FOV ~12 mm across ~470 px)
MAIN_ARTERY_WIDTH = 4.0  # px; arteries are ~2/3 the calibre of veins
MIN_WIDTH = 1.0  # px; thinner branches stop
STEP = 8.0  # px per random-walk step
BRANCH_PROBABILITY = 0.08  # per step
ANGLE_JITTER = 0.12  # rad per step (tortuosity)
MAX_DEPTH = 3
MAX_STEPS = 70


def _walk(
    canvas: np.ndarray,
    rng: np.random.Generator,
    x: float,
    y: float,
    angle: float,
    curvature: float,
    width: float,
    depth: int,
    scale: float,
    fov: tuple[float, float, float],
) -> None:
    """Draw one vessel from (x, y) and recurse into its branches."""
    cx, cy, radius = fov
    step = STEP * scale
    steps = int(MAX_STEPS * (0.6 + 0.4 * rng.random()) / (1 + 0.5 * depth))
    for _ in range(steps):
        angle += curvature + rng.normal(0.0, ANGLE_JITTER)
        nx, ny = x + step * math.cos(angle), y + step * math.sin(angle)
        if (nx - cx) ** 2 + (ny - cy) ** 2 > (1.02 * radius) ** 2:
            return
        # thin vessels are paler: less blood along the line of sight
        value = int(255 * min(1.0, 0.35 + 0.65 * width / (MAIN_ARTERY_WIDTH * scale)))
        cv2.line(canvas, (int(x * 4), int(y * 4)), (int(nx * 4), int(ny * 4)), value, max(1, int(width + 0.5)),
                 cv2.LINE_AA, shift=2)
        x, y = nx, ny
        width *= 0.992
        if depth < MAX_DEPTH and rng.random() < BRANCH_PROBABILITY:
            side = 1.0 if rng.random() < 0.5 else -1.0
            child_width = width * rng.uniform(0.55, 0.8)
            if child_width >= MIN_WIDTH:
                _walk(canvas, rng, x, y, angle + side * rng.uniform(0.5, 1.1), curvature * 0.5 + side * 0.01,
                      child_width, depth + 1, scale, fov)
            width *= 0.9
        if width < MIN_WIDTH * 0.8:
            return


def draw_vessel_tree(
    rng: np.random.Generator,
    shape: tuple[int, int],
    disc: tuple[float, float],
    temporal_sign: float,
    fov: tuple[float, float, float],
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw veins and arteries radiating from the optic disc.

    Args:
        rng: the generator's random stream.
        shape: (height, width) of the photograph in pixels.
        disc: optic-disc centre (x, y) in pixels.
        temporal_sign: +1 when the macula lies to the right of the disc (x increasing), -1 otherwise.
        fov: (cx, cy, radius) of the field of view in pixels; vessels stop at its rim.
        scale: FOV radius / 235 (sizes are tuned for a 512 px photograph).

    Returns:
        (veins, arteries): ``uint8`` (H, W) coverage maps, 255 on the vessel centre line, anti-aliased edges.
    """
    veins = np.zeros(shape, np.uint8)
    arteries = np.zeros(shape, np.uint8)
    t = temporal_sign
    # (initial angle, curvature): superior/inferior temporal arcades bend towards the macula; nasal ones are straighter.
    up, down = -math.pi / 2, math.pi / 2
    temporal = 0.0 if t > 0 else math.pi
    arcades = [
        (up + t * 0.45, 0.035 * t),
        (down - t * 0.45, -0.035 * t),
        (temporal + math.pi - t * 0.6, -0.01 * t),
        (temporal + math.pi + t * 0.6, 0.01 * t),
    ]
    for canvas, main_width, offset in ((veins, MAIN_VEIN_WIDTH, 0.12), (arteries, MAIN_ARTERY_WIDTH, -0.12)):
        for angle, curvature in arcades:
            a = angle + offset + rng.normal(0.0, 0.1)
            width = main_width * scale * rng.uniform(0.85, 1.15)
            _walk(canvas, rng, disc[0], disc[1], a, curvature * rng.uniform(0.7, 1.3), width, 0, scale, fov)
        # a few small vessels leaving the disc towards the macula
        for _ in range(1):
            a = temporal + rng.normal(0.0, 0.4)
            _walk(canvas, rng, disc[0], disc[1], a, 0.0, main_width * scale * 0.35, 2, scale, fov)
    return veins, arteries

"""The ``python -m device preprocess`` command: crop photographs to their FOV and draw the FOV outline."""

from __future__ import annotations

from pathlib import Path

import click
import cv2
import numpy as np

from device.errors import ImageError
from device.preprocess import PreprocessedImage, preprocess_file

OUTLINE_RGB = (0, 255, 0)


def outline_crop(pre: PreprocessedImage) -> np.ndarray:
    """The uint8 RGB crop with the FOV boundary drawn in green (for people to check the crop)."""
    out = pre.rgb.copy()
    contours, _ = cv2.findContours(pre.fov_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness=max(1, pre.rgb.shape[0] // 256))
    return out


def preprocess_files(paths: list[str], out_dir: str | Path, size: int) -> list[tuple[str, str]]:
    """Preprocess each file, write ``<stem>_crop.png`` with its FOV outline, and report failures.

    Args:
        paths: photograph files.
        out_dir: output folder (created).
        size: model input size in pixels.

    Returns:
        (path, one-sentence reason) for every file that could not be preprocessed; the others are written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = []
    for path in paths:
        try:
            pre = preprocess_file(path, size=size)
        except ImageError as exc:
            failures.append((path, str(exc)))
            click.echo(f"{path}: {exc}", err=True)
            continue
        target = out / f"{Path(path).stem}_crop.png"
        cv2.imwrite(str(target), cv2.cvtColor(outline_crop(pre), cv2.COLOR_RGB2BGR))
        g, f = pre.geometry, pre.fov
        click.echo(
            f"{path}: FOV centre ({f.cx:.0f}, {f.cy:.0f}) radius {f.radius:.0f} px{' (clipped)' if f.clipped else ''}; "
            f"crop x0={g.x0} y0={g.y0} side={g.side} -> {target}"
        )
    return failures

"""``python -m device preprocess``: crop photographs to their FOV and draw the FOV outline, one line per file.

One unreadable file never stops the others (like ``device.screen_files`` for ``screen``).

    for path, ok, line in preprocess_paths(["photo.jpg"], "crops/", size=512):
        print(path, line)     # "FOV centre (x, y) radius r px; crop x0=.. y0=.. side=.. -> crops/photo_crop.png"
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from device.atomic import write_atomic
from device.errors import HardwareError, ImageError, not_saved_message
from device.preprocess import PreprocessedImage, preprocess_file

OUTLINE_RGB = (0, 255, 0)


def outline_crop(pre: PreprocessedImage) -> np.ndarray:
    """The uint8 RGB crop with the FOV boundary drawn in green (for people to check the crop)."""
    out = pre.rgb.copy()
    contours, _ = cv2.findContours(pre.fov_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE_RGB, thickness=max(1, pre.rgb.shape[0] // 256))
    return out


def preprocess_paths(paths: Sequence[str], out_dir: str | Path, size: int) -> Iterator[tuple[str, bool, str]]:
    """Preprocess each file and write ``<stem>_crop.png`` with its FOV outline.

    Args:
        paths: photograph files.
        out_dir: output folder (created).
        size: model input size in pixels.

    Yields:
        ``(path, ok, line)`` per file: ``ok`` False with the one-sentence reason when the file could not be
        preprocessed, else the FOV found and the crop written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HardwareError(f"The output folder {out} cannot be created ({exc.strerror}); choose another --out "
                            "folder.") from None
    for path in paths:
        try:
            pre = preprocess_file(path, size=size)
        except ImageError as exc:
            yield path, False, str(exc)
            continue
        target = out / f"{Path(path).stem}_crop.png"
        ok, png = cv2.imencode(".png", cv2.cvtColor(outline_crop(pre), cv2.COLOR_RGB2BGR))
        try:
            write_atomic(target, png.tobytes(), fsync=False, private=True)  # a crop of a patient's retina
        except OSError as exc:
            yield path, False, not_saved_message(exc, f"the crop {target.name}", "run the command again")
            continue
        g, f = pre.geometry, pre.fov
        yield path, True, (f"FOV centre ({f.cx:.0f}, {f.cy:.0f}) radius {f.radius:.0f} px"
                           f"{' (clipped)' if f.clipped else ''}; crop x0={g.x0} y0={g.y0} side={g.side} -> {target}")

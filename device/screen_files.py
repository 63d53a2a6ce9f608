"""``python -m device screen``: screen photograph files and folders, one result (or error) per image.

One unreadable file or folder (missing, a FIFO, a device, too large, another format) never stops the others;
the model is loaded once.

    for record in screen_paths(["samples/"], model=None):
        print(record)     # {"image", "verdict", "probability", "quality", "regions", "model_id", "timings_ms"}
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from device.errors import ImageError
from device.imageio import iter_images, load_image
from device.model import BundleModelConfig, FakeModelConfig, open_model
from device.pipeline import screen_frame
from device.quality import QualityConfig, QualityGate


def screen_paths(paths: Sequence[str | Path], model: str | None = None,
                 quality: QualityConfig | None = None) -> Iterator[dict]:
    """Screen every image file in ``paths`` (folders are expanded, not recursively).

    Args:
        paths: image files and folders.
        model: a bundle folder, 'fake', or None for the bundled default model.
        quality: gate thresholds (default: the calibrated ones).

    Yields:
        Per image, the JSON object of the ``screen`` command: ``image`` plus the result fields, or ``image`` and
        ``error`` (one sentence) when the file cannot be screened.

    Raises:
        ModelError: the model cannot be loaded (before any image is screened).
    """
    cfg = FakeModelConfig() if model == "fake" else BundleModelConfig(path=str(model) if model else None)
    the_model = open_model(cfg)
    gate = QualityGate(quality)
    for path, problem in iter_images(paths):
        name = str(path)
        if problem is not None:  # a folder that cannot be listed: the other paths are still screened
            yield {"image": name, "error": problem}
            continue
        try:
            t = time.perf_counter()
            rgb = load_image(path, name=name)
            load_ms = (time.perf_counter() - t) * 1000
            result = screen_frame(rgb, the_model, gate, label=name)
        except ImageError as exc:
            yield {"image": name, "error": str(exc)}
            continue
        record = {"image": name, **result.to_json_dict()}
        record["timings_ms"] = {"load": round(load_ms, 3), **record["timings_ms"]}
        yield record


def format_line(record: dict) -> str:
    """One human-readable line for a screen record."""
    if "error" in record:
        return f"{record['image']}: ERROR {record['error']}"
    p = record["probability"]
    prob = "n/a" if p is None else f"{p:.2f}"
    text = f"{record['image']}: {record['verdict'].upper()} (p={prob}"
    if record["regions"]:
        text += f", {len(record['regions'])} region(s)"
    text += ")"
    if not record["quality"]["gradable"]:
        text += " — " + "; ".join(record["quality"]["reasons"])
    return text

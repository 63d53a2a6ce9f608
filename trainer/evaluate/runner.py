"""Run a predictor over DiaretDB1 and write the evaluation folder (metrics.json, report.md, plots, overlays).

The work per image is streamed (read → predict → count at every threshold → optional overlay), so memory stays
at one full-resolution image however many images there are; inference and metric time are measured apart.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device.atomic import write_atomic
from device.errors import ConfigError
from trainer.evaluate.config import EvaluationConfig
from trainer.evaluate.predictors import Predictor
from trainer.evaluate.protocol import ImageCounts, count_image
from trainer.evaluate.summary import subset_metrics

SCHEMA = "dr-cam-evaluation/1"
SUBSETS = ("all", "test")


@dataclass
class Timing:
    """Seconds spent per stage, summed over images."""

    load_s: float = 0.0
    inference_s: float = 0.0
    metrics_s: float = 0.0
    overlays_s: float = 0.0
    per_image_inference_s: list[float] = field(default_factory=list)
    per_image_metrics_s: list[float] = field(default_factory=list)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_diaretdb1` computed and where it wrote it."""

    metrics: dict[str, Any]
    out_dir: Path
    counts: list[ImageCounts]
    timing: Timing


def _diseased(db, image_id: str, masks: dict[str, np.ndarray], config: EvaluationConfig) -> bool:
    if config.healthy_confidence == config.confidence:
        return any(bool(masks[t].any()) for t in config.healthy_types)
    from trainer.data.diaretdb1_layout import fused_threshold

    level = fused_threshold(config.healthy_confidence)
    return any(bool((db.fused_map(image_id, t) >= level).any()) for t in config.healthy_types)


def pick_overlay_ids(db, n: int, candidates: Sequence[str] | None = None) -> list[str]:
    """``n`` images with the most lesion types (ties: most lesion pixels), for the Fig.-2-like overlays.

    Args:
        db: the dataset.
        n: how many.
        candidates: images to choose from (default: all); test images are preferred when there are enough.
    """
    if n <= 0:
        return []
    pool = list(db.image_ids if candidates is None else candidates)
    test = [i for i in pool if i in set(db.test_ids)]
    pool = test if len(test) >= n else pool
    scored = []
    for image_id in pool:
        masks = db.lesion_masks(image_id)
        scored.append((-sum(bool(m.any()) for m in masks.values()), -sum(int(m.sum()) for m in masks.values()),
                       image_id))
    return [image_id for *_, image_id in sorted(scored)[:n]]


def evaluate_diaretdb1(data_root: str | Path, predictor: Predictor, out_dir: str | Path,
                       config: EvaluationConfig | None = None, n_overlays: int = 6,
                       overlay_ids: Sequence[str] | None = None, image_ids: Sequence[str] | None = None,
                       progress: bool = True, db=None) -> EvaluationResult:
    """Evaluate ``predictor`` on DiaretDB1 (all images and the official test split) and write the report.

    Args:
        data_root: folder holding ``diaretdb1_v_1_1/`` (the real ``../shared/data/diaretdb1`` or a synthetic one).
        predictor: see :mod:`trainer.evaluate.predictors`.
        out_dir: output folder (created); files are written atomically.
        config: protocol parameters (defaults: the paper's).
        n_overlays: how many overlay PNGs to draw (chosen by :func:`pick_overlay_ids` unless ``overlay_ids``).
        overlay_ids: explicit images to draw.
        image_ids: evaluate only these images (default: all); the "test" subset is their intersection with the
            official test list.
        progress: show a progress bar.
        db: an already loaded dataset (``trainer.data.diaretdb1.load_diaretdb1``), to skip reloading it.

    Returns:
        :class:`EvaluationResult` with the metrics dictionary written to ``metrics.json``.
    """
    from trainer.evaluate.overlays import render_overlay
    from trainer.evaluate.report import write_report

    config = config or EvaluationConfig()
    if db is None:
        from trainer.data.diaretdb1 import load_diaretdb1

        db = load_diaretdb1(data_root, confidence=config.confidence)
    ids = list(db.image_ids if image_ids is None else image_ids)
    unknown = sorted(set(ids) - set(db.image_ids))
    if unknown:
        raise ConfigError(f"Images {unknown[:3]} are not in the DiaretDB1 folder {data_root}; check the ids.")
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    draw = set(overlay_ids if overlay_ids is not None else pick_overlay_ids(db, n_overlays, ids)) & set(ids)
    fov = np.asarray(db.fov_mask, bool)
    timing, counts = Timing(), []
    for image_id in tqdm(ids, desc="evaluate DiaretDB1", unit="image", disable=not progress):
        t0 = time.perf_counter()
        rgb, masks = db.image(image_id), db.lesion_masks(image_id)
        t1 = time.perf_counter()
        prob, heat = predictor(image_id, rgb)
        t2 = time.perf_counter()
        counts.append(count_image(image_id, prob, heat, masks, _diseased(db, image_id, masks, config), config, fov))
        t3 = time.perf_counter()
        if image_id in draw:
            png = render_overlay(rgb, heat, masks, config, fov, title=f"{image_id}  p(referable)={prob:.2f}",
                                 referable=prob >= predictor.decision_threshold)
            write_atomic(out / "overlays" / f"{image_id}.png", png)
        timing.load_s += t1 - t0
        timing.inference_s += t2 - t1
        timing.metrics_s += t3 - t2
        timing.overlays_s += time.perf_counter() - t3
        timing.per_image_inference_s.append(t2 - t1)
        timing.per_image_metrics_s.append(t3 - t2)
    t4 = time.perf_counter()
    test_ids = set(db.test_ids)
    subsets = {"all": counts, "test": [c for c in counts if c.image_id in test_ids]}
    results = {name: subset_metrics(items, config, predictor.decision_threshold, db_lesion_types(db))
               for name, items in subsets.items() if items}
    timing.metrics_s += time.perf_counter() - t4
    metrics: dict[str, Any] = dict(results["all"][0])
    metrics["test"] = results["test"][0] if "test" in results else None
    metrics.update({
        "schema": SCHEMA,
        "model": {"id": predictor.model_id, "decision_threshold": predictor.decision_threshold,
                  "decision_threshold_source": predictor.threshold_source,
                  **({"details": predictor.details} if getattr(predictor, "details", None) else {})},
        "dataset": {"root": str(data_root), "n_images": len(ids), "n_test": len(subsets["test"]),
                    "ground_truth": f"fused expert map >= {config.confidence:.0%} confidence"},
        "protocol": json.loads(config.model_dump_json()),
        "timing": {"n_images": len(ids), "load_s": round(timing.load_s, 3),
                   "inference_s": round(timing.inference_s, 3), "metrics_s": round(timing.metrics_s, 3),
                   "overlays_s": round(timing.overlays_s, 3)},
    })
    write_atomic(out / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    write_atomic(out / "per_image.csv", _per_image_csv(counts, config, predictor.decision_threshold, test_ids))
    write_report(out, metrics, results, sorted(draw))
    return EvaluationResult(metrics, out, counts, timing)


def db_lesion_types(db) -> tuple[str, ...]:
    """The dataset's lesion types in canonical order."""
    from trainer.data.diaretdb1_layout import LESION_TYPES

    return tuple(getattr(db, "lesion_types", LESION_TYPES))


def _per_image_csv(counts: list[ImageCounts], config: EvaluationConfig, threshold: float, test_ids: set) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    types = list(counts[0].n_lesions) if counts else []
    op = list(config.thresholds()).index(config.region_threshold)
    writer.writerow(["image", "split", "diseased", "prob_referable", "referable", "regions"]
                    + [f"{t}_lesions" for t in types] + [f"{t}_detected" for t in types])
    for c in counts:
        regions = int(c.counts[types[0]]["n_regions"][op]) if types else 0
        writer.writerow([c.image_id, "test" if c.image_id in test_ids else "train", int(c.diseased),
                         f"{c.prob:.6f}", int(c.prob >= threshold), regions]
                        + [c.n_lesions[t] for t in types] + [int(c.counts[t]["detected"][op]) for t in types])
    return buf.getvalue().encode()


def run_evaluation(model: str, data_root: str | Path, out_dir: str | Path, overrides: Sequence[str] = (),
                   which: str = "best", n_overlays: int = 6, image_ids: Sequence[str] | None = None,
                   progress: bool = True, threshold: float | str = "auto") -> EvaluationResult:
    """What ``python -m trainer evaluate`` does: load the dataset and the model, evaluate, write the folder.

    Args:
        model: ``"oracle"``, a training run folder (``runs/<name>``) or a bundle (``models/<id>``).
        data_root: folder holding ``diaretdb1_v_1_1/``.
        out_dir: output folder.
        overrides: protocol settings as ``KEY=VALUE`` (see :class:`EvaluationConfig`).
        which: ``best`` or ``last`` weights of a run folder.
        n_overlays: number of overlay images.
        image_ids: evaluate only these images.
        progress: show a progress bar.
        threshold: decision threshold, ``"auto"`` or a number (see :func:`load_predictor`).
    """
    from trainer.data.diaretdb1 import load_diaretdb1
    from trainer.evaluate.config import load_evaluation_config
    from trainer.evaluate.predictors import load_predictor

    config = load_evaluation_config(list(overrides))
    db = load_diaretdb1(data_root, confidence=config.confidence)

    def truth(image_id: str) -> tuple[bool, np.ndarray]:
        masks = db.lesion_masks(image_id)
        return _diseased(db, image_id, masks, config), np.logical_or.reduce(list(masks.values()))

    predictor = load_predictor(model, which=which, truth=truth, threshold=threshold)
    return evaluate_diaretdb1(data_root, predictor, out_dir, config, n_overlays=n_overlays, image_ids=image_ids,
                              progress=progress, db=db)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: AUC and the per-type headline numbers of every subset."""
    lines = []
    for name, m in (("all", metrics), ("test", metrics.get("test"))):
        if not m:
            continue
        lines.append(f"{name} ({m['n_images']} images): AUC {_fmt(m['auc'])}, sensitivity {_fmt(m['sensitivity'])}, "
                     f"specificity {_fmt(m['specificity'])}")
        for t, le in m["lesions"].items():
            lines.append(f"  {t}: {le['n_lesions']} lesions, image 50%/1px {_fmt(le['image_sensitivity_50'])}/"
                         f"{_fmt(le['image_sensitivity_1px'])}, FROC@1.5 {_fmt(le['froc_sensitivity_at_1.5'])}, "
                         f"score {_fmt(le['froc_score'])}")
    return lines

"""report.md (with the paper's numbers side by side), roc.png and froc.png of one evaluation folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device.atomic import write_atomic
from device.notice import RESEARCH_NOTICE
from trainer.evaluate.paper import PAPER
from trainer.evaluate.plots import TYPE_TITLES, froc_png, roc_png


def _pct(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{100 * value:.1f} %"
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _num(value: float | None, ci: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _subsets(metrics: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"all {metrics['n_images']}", metrics)]
    if metrics.get("test"):
        out.append((f"test {metrics['test']['n_images']}", metrics["test"]))
    return out


def render_markdown(metrics: dict[str, Any], overlay_ids: Sequence[str] = ()) -> str:
    """The Markdown report of one evaluation (values from the metrics.json dictionary)."""
    subsets = _subsets(metrics)
    head = " | ".join(name for name, _ in subsets)
    sep = "|---" * (len(subsets) + 2) + "|"
    rate = metrics["protocol"]["report_fp_rate"]
    key = f"froc_sensitivity_at_{rate:g}"
    model = metrics["model"]
    details = model.get("details") or {}
    about = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in details.items()
                      if k != "run_dir")
    lines = [
        f"# DiaretDB1 evaluation — `{model['id']}`",
        "",
        *([f"Model: {about}.", ""] if about else []),
        f"{RESEARCH_NOTICE}. Protocol: Gondal et al., ICIP 2017, §4.3 as specified in "
        "docs/evaluation.md; 95 % bootstrap intervals over images in brackets "
        f"({metrics['protocol']['n_bootstrap']} resamples, seed {metrics['protocol']['seed']}). "
        f"Ground truth: {metrics['dataset']['ground_truth']}. Decision threshold "
        f"{model['decision_threshold']:.3f} ({model['decision_threshold_source']}); region threshold "
        f"{metrics['protocol']['region_threshold']} on the per-image-normalised CAM "
        f"(normalisation `{metrics['protocol']['normalisation']}`).",
        "",
        "## Diseased vs healthy",
        "",
        f"Healthy = no lesion of {', '.join(metrics['protocol']['healthy_types'])} at >= "
        f"{metrics['protocol']['healthy_confidence']:.0%} confidence.",
        "",
        f"| metric | {head} | paper |",
        sep,
        "| images (diseased / healthy) | " + " | ".join(f"{m['n_diseased']} / {m['n_healthy']}" for _, m in subsets)
        + " | 89 (47 / 42 implied) |",
        "| AUC | " + " | ".join(_num(m["auc"], m["auc_ci95"]) for _, m in subsets) + f" | {PAPER['auc']} |",
        "| sensitivity | " + " | ".join(_pct(m["sensitivity"], m["sensitivity_ci95"]) for _, m in subsets)
        + f" | {_pct(PAPER['sensitivity'])} |",
        "| specificity | " + " | ".join(_pct(m["specificity"], m["specificity_ci95"]) for _, m in subsets)
        + f" | {_pct(PAPER['specificity'])} |",
        "",
        "![ROC](roc.png)",
        "",
        "## Image-level lesion detection",
        "",
        "Scenario 1 (50 %): some lesion of the type is covered to >= 50 % by one region; scenario 2 (1 px): some "
        "region touches the type's ground truth. "
        + ("Regions count only on images the classifier calls referable (gated); " if
           metrics["protocol"]["gate_by_classifier"] else "Regions count on every image; ")
        + "each cell is gated / ungated, then the number of images with the type in parentheses.",
        "",
        f"| type | {' | '.join(f'{n} 50 %' for n, _ in subsets)} | {' | '.join(f'{n} 1 px' for n, _ in subsets)} "
        "| paper 50 % / 1 px |",
        "|---" * (2 * len(subsets) + 2) + "|",
    ]
    for lesion_type, title in TYPE_TITLES.items():
        if lesion_type not in metrics["lesions"]:
            continue
        cells50, cells1 = [], []
        for _, m in subsets:
            le = m["lesions"][lesion_type]
            cells50.append(f"{_pct(le['image_sensitivity_50'])} / {_pct(le['image_sensitivity_50_ungated'])} "
                           f"({le['n_images_with_lesion']})")
            cells1.append(f"{_pct(le['image_sensitivity_1px'])} / {_pct(le['image_sensitivity_1px_ungated'])}")
        lines.append(f"| {title} | {' | '.join(cells50)} | {' | '.join(cells1)} | "
                     f"{_pct(PAPER['image_50'][lesion_type])} / {_pct(PAPER['image_1px'][lesion_type])} |")
    spec = " | ".join(_pct(m["image_specificity"], m["image_specificity_ci95"]) for _, m in subsets)
    lines += [f"| specificity (healthy images without shown regions) | {spec} | {' | '.join('' for _ in subsets)} | |",
              "", "## Lesion-level FROC", "",
              f"Paper rule: a lesion is detected when one region covers >= 50 % of it; a region is a false positive "
              f"when its mean IoU with the lesions it touches is < 0.5 (judged against "
              f"{'all lesion types' if metrics['protocol']['fp_scope'] == 'all_types' else 'its own type'}). "
              "Any-pixel rule: touched lesions are detected, regions touching none are false positives. "
              f"Sensitivity at {rate:g} FP/image and FROC score (mean at 1/8 … 8 FP/image); number of "
              "ground-truth lesions in parentheses; operating point = the unit's region threshold. "
              + ("The FROC ranks the operating point's regions by their CAM maximum, so the curve ends at the "
                 "operating point; beyond its FP rate the sensitivity is held flat."
                 if metrics["protocol"].get("froc_sweep", "score") == "score" else
                 "The FROC re-extracts regions at every swept region threshold."), "",
              f"| type | subset (lesions) | paper rule @ {rate:g} | FROC score | any-pixel @ {rate:g} | "
              "any-pixel score | operating point: sens / FP per image | paper @ 1.5 |",
              "|---|---|---|---|---|---|---|---|"]
    for lesion_type, title in TYPE_TITLES.items():
        if lesion_type not in metrics["lesions"]:
            continue
        for name, m in subsets:
            le = m["lesions"][lesion_type]
            op = le["operating_point"]
            lines.append(
                f"| {title} | {name} ({le['n_lesions']}) | {_pct(le[key], le[key + '_ci95'])} | "
                f"{_num(le['froc_score'], le['froc_score_ci95'])} | "
                f"{_pct(le[f'froc_anypixel_sensitivity_at_{rate:g}'])} | {_num(le['froc_anypixel_score'])} | "
                f"{_pct(op['sensitivity'])} / {op['fp_per_image']:.2f} | {_pct(PAPER['froc_at_1.5'][lesion_type])} |")
    lines += ["", "![FROC](froc.png)", ""]
    if overlay_ids:
        lines += ["## Overlays", "", "Photograph with the expert ground truth, and the CAM heat map with the proposed "
                  "regions (white) against the ground truth of each type (files in `overlays/`, not committed for "
                  "licensed photographs).", ""]
        lines += [f"- [overlays/{i}.png](overlays/{i}.png)" for i in overlay_ids]
        lines.append("")
    t = metrics["timing"]
    lines += ["## Timing", "", f"{t['n_images']} images: reading {t['load_s']:.1f} s, inference {t['inference_s']:.1f} "
                               "s"
              f" (preprocessing + model + CAM mapping), metrics {t['metrics_s']:.1f} s (regions, matching, "
              f"bootstrap), overlays {t['overlays_s']:.1f} s.", ""]
    return "\n".join(lines)


def write_report(out_dir: str | Path, metrics: dict[str, Any], results: dict[str, tuple],
                 overlay_ids: Sequence[str] = ()) -> None:
    """Write report.md, roc.png and froc.png into ``out_dir`` (atomically).

    Args:
        out_dir: the evaluation folder (metrics.json is written by the caller).
        metrics: the metrics.json dictionary.
        results: ``{subset: (metrics, ClassificationResult, curves)}`` from :func:`subset_metrics`.
        overlay_ids: overlay images written to ``overlays/``.
    """
    out = Path(out_dir)
    model_id = metrics["model"]["id"]
    write_atomic(out / "roc.png", roc_png(results, model_id))
    write_atomic(out / "froc.png", froc_png(results, model_id, metrics["protocol"]["report_fp_rate"]))
    write_atomic(out / "report.md", render_markdown(metrics, overlay_ids).encode())


PUBLISHED_FILES = ("metrics.json", "roc.png", "froc.png")


def publish_report(eval_dir: str | Path, dest: str | Path) -> Path:
    """Copy an evaluation into a folder meant for the repository (e.g. ``docs/results/diaretdb1_<model>``).

    Only ``metrics.json``, ``roc.png``, ``froc.png`` and a ``report.md`` without the overlay section are copied:
    overlays of DiaretDB1 photographs are derived from licensed images and must not be committed.

    Returns:
        The destination folder.
    """
    import json

    src, out = Path(eval_dir), Path(dest)
    metrics = json.loads((src / "metrics.json").read_text())
    for name in PUBLISHED_FILES:
        write_atomic(out / name, (src / name).read_bytes())
    write_atomic(out / "report.md", render_markdown(metrics, ()).encode())
    return out

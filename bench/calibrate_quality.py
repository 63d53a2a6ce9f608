"""Calibrate the quality gate by cross-validation and write its card (device/quality_calibration.json).

1. Measure every real photograph under ../shared/data and degraded copies of the gradable ones
   (bench/quality_data.py), preprocessed as the unit does for a model of ``--model-size`` pixels.
2. Cross-validate: 5 folds by patient (both eyes and every degraded copy of a photograph stay in one fold);
   on each, fit the thresholds and the score on four folds (bench/quality_fit.py) and apply the gate to the
   fifth. The tables printed are the folds the gate was not fitted on. Then leave each camera out in turn
   (IDRiD, DiaretDB1, Kaggle): fit on everything else, apply to it.
3. Fit on everything, write the card, and plot each metric (gradable vs EyeQ Reject vs degraded copies, with the
   threshold) and the score into docs/img/ (histograms only: no image is reproduced).

    python -m bench.calibrate_quality --cache /tmp/quality.jsonl         # ~8 min on 2 shared cores
    python -m bench.calibrate_quality --cache /tmp/quality.jsonl --extra-eyeq labels.csv --extra-images DIR
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from bench.bench_quality import default_model_size, print_tables
from bench.quality_data import EXPECTED, GRADES, VARIANTS, Photo, copies, photos
from bench.quality_fit import RULES, SCORE_LIMITS, fit_score, fit_thresholds
from device.errors import BlankImageError, ImageError, ImageTooSmallError, NotFundusError
from device.imageio import load_image
from device.preprocess import preprocess
from device.quality import REASONS, QualityConfig, QualityGate, measure, unfound_reason
from device.quality_score import CALIBRATION_FILE, GradabilityScore, QualityCalibration

REPO = Path(__file__).resolve().parents[1]
PLOTS = REPO / "docs" / "img"
FOLDS = 5
CODE = ("device/quality_metrics.py", "device/fov.py", "device/preprocess.py", "bench/quality_data.py")


def _code_hash() -> str:
    h = hashlib.sha256()
    for p in CODE:
        h.update((REPO / p).read_bytes())
    return h.hexdigest()[:16]


def measure_one(img: np.ndarray, size: int) -> dict:
    """``error`` (a reason key, or '') and the metrics of one photograph, as the unit would measure it."""
    try:
        pre = preprocess(img, size=size)
    except (ImageTooSmallError, BlankImageError, NotFundusError) as err:
        # min_local_contrast 0: "no_fov" here; apply() decides "washed out" from lit_contrast per fitted card.
        report = QualityGate.report_for_error(err, img, QualityConfig(min_local_contrast=0.0))
        key = next(k for k, v in REASONS.items() if v == report.reasons[0])
        return {"error": key, **{k: float(v) for k, v in report.metrics.items()}}
    return {"error": "", **{k: float(v) for k, v in measure(img, pre).items()}}


def measure_all(items: list[Photo], size: int, cache: Path | None, degraded: bool = True) -> list[dict]:
    """One row per photograph and degraded copy; reuses ``cache`` when it was made by the same code."""
    from tqdm import tqdm

    key = {"code": _code_hash(), "size": size, "photos": len(items), "degraded": degraded}
    if cache and cache.exists():
        lines = cache.read_text().splitlines()
        if lines and json.loads(lines[0]) == key:
            return [json.loads(x) for x in lines[1:]]
    rows = []
    for i, photo in enumerate(tqdm(items, desc="measuring", mininterval=5)):
        rgb = load_image(photo.path)
        try:
            made = list(copies(photo, rgb, seed=i)) if degraded else [("original", rgb)]
        except ImageError:  # the original's retina is not found: no degraded copies can be made
            made = [("original", rgb)]
        for variant, img in made:
            rows.append({"source": photo.source, "name": photo.name, "group": photo.group, "grade": photo.grade,
                         "variant": variant, **measure_one(img, size)})
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("\n".join(json.dumps(x) for x in [key, *rows]) + "\n")
    return rows


def apply(rows: list[dict], thresholds: dict[str, float], score: GradabilityScore, size: int) -> list[dict]:
    """Copies of ``rows`` with ``failed`` (the gate's reason keys joined by '+', '' when gradable)."""
    gate = QualityGate(QualityConfig(**thresholds, max_score=score.threshold), score=score)
    out = []
    for r in rows:
        if r["error"] == "no_fov" and "lit_contrast" in r:
            keys = [unfound_reason(r["lit_contrast"], gate.cfg)]
        else:
            keys = [r["error"]] if r["error"] else gate.failures(dict(r), size)
        out.append({**r, "failed": "+".join(keys)})
    return out


def fit(rows: list[dict], size: int, seed: int = 0) -> tuple[dict[str, float], GradabilityScore, np.ndarray, list]:
    """Thresholds and score fitted on ``rows`` (plus the score's inner out-of-fold predictions)."""
    thresholds = fit_thresholds(rows)
    score, oof, scored = fit_score(rows, thresholds, size, seed)
    return thresholds, score, oof, scored


def cross_validate(rows: list[dict], size: int, seed: int = 0) -> list[dict]:
    """Out-of-fold rows: each fold is judged by a gate fitted on the other folds (grouped by patient)."""
    from sklearn.model_selection import StratifiedGroupKFold

    originals = [r for r in rows if r["variant"] == "original"]
    strata = [f"{r['source']}{r['grade']}" for r in originals]
    groups = [r["group"] for r in originals]
    out = []
    for k, (_, te) in enumerate(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed)
                                .split(originals, strata, groups)):
        test_groups = {groups[i] for i in te}
        train = [r for r in rows if r["group"] not in test_groups]
        thresholds, score, _, _ = fit(train, size, seed)
        out += [{**r, "fold": k} for r in apply([r for r in rows if r["group"] in test_groups],
                                                thresholds, score, size)]
    return out


def leave_camera_out(rows: list[dict], size: int) -> dict[str, list[dict]]:
    """For each non-EyeQ source: the gate fitted without any of its photographs, applied to them."""
    out = {}
    for source in ("idrid", "diaretdb1", "kaggle"):
        train = [r for r in rows if r["source"] != source]
        test = [r for r in rows if r["source"] == source]
        if test:
            thresholds, score, _, _ = fit(train, size)
            out[source] = apply(test, thresholds, score, size)
    return out


def summary(judged: list[dict]) -> dict[str, float]:
    """Headline fractions of judged rows (the card's cross_validation block and the README row)."""
    def rate(sel):
        return round(sum(bool(r["failed"]) for r in sel) / len(sel), 4) if sel else float("nan")

    def right(kind):
        sel = [r for r in judged if r["variant"] == kind]
        return round(sum(bool(set(r["failed"].split("+")) & EXPECTED[kind]) for r in sel) / len(sel), 4) if sel \
            else float("nan")

    o = [r for r in judged if r["variant"] == "original"]
    out = {f"eyeq_{g.lower()}_ungradable": rate([r for r in o if r["source"] == "eyeq" and r["grade"] == i])
           for i, g in enumerate(GRADES)}
    out |= {f"{s}_ungradable": rate([r for r in o if r["source"] == s]) for s in ("idrid", "diaretdb1", "kaggle")}
    out |= {f"{v}_right_reason": right(v) for v in VARIANTS}
    return {k: v for k, v in out.items() if v == v}


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_card(rows: list[dict], thresholds, score: GradabilityScore, cv: dict[str, float],
               path: Path = CALIBRATION_FILE) -> None:
    """Write the calibration card the gate loads."""
    originals = Counter(r["source"] for r in rows if r["variant"] == "original")
    copies_n = sum(r["variant"] != "original" for r in rows)
    method = (f"thresholds: per source at most {100 * 0.005:g} % of gradable photographs refused, half-way to the "
              f"least degraded 1 % of the matching degraded copies when clear; score: L2 logistic regression of "
              f"EyeQ Reject on the photographs the checks pass, threshold from nested {FOLDS}-fold out-of-fold "
              f"predictions within limits {SCORE_LIMITS}; figures: {FOLDS}-fold cross-validation by patient")
    card = QualityCalibration(
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        code_version=_git_head(), thresholds={k: round(v, 6) for k, v in thresholds.items()}, score=score,
        data={**dict(originals), "degraded_copies": copies_n}, method=method, cross_validation=cv)
    path.write_text(card.model_dump_json(indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="photographs per source (default: all)")
    parser.add_argument("--model-size", type=int, default=None, help="default: the default bundle's input size")
    parser.add_argument("--cache", type=Path, default=None, help="measurements cache (JSON lines)")
    parser.add_argument("--no-write", action="store_true", help="do not write the card or the plots")
    parser.add_argument("--extra-eyeq", type=Path, default=None,
                        help="an independent test: EyeQ labels (image,quality) of other EyePACS images")
    parser.add_argument("--extra-images", type=Path, default=None, help="folder of those images (<image>.jpeg)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="The least populated class")  # small strata (Kaggle: 10 images)
    items = photos(limit=args.limit)
    if not items:
        print("No real photographs under ../shared/data: calibration needs them.", file=sys.stderr)
        return 1
    size = args.model_size or default_model_size()
    rows = measure_all(items, size, args.cache)
    counts = Counter(r["source"] for r in rows if r["variant"] == "original")
    print(f"\n{len(rows)} photographs measured at model size {size} px "
          f"({', '.join(f'{s} {n}' for s, n in counts.items())} real ones, the rest degraded copies)")

    judged = cross_validate(rows, size)
    print(f"\n## Cross-validated ({FOLDS} folds by patient; every figure is on folds the gate was not fitted on)")
    print_tables(judged)
    cv = summary(judged)
    lco = leave_camera_out(rows, size)
    print("\n## Each camera left out of the fit (fitted on all other sources, applied to it)\n")
    print("| camera | originals ungradable | degraded copies with the right reason (worst kind) |")
    print("|---|---:|---|")
    for source, res in lco.items():
        s = summary(res)
        worst = min(VARIANTS, key=lambda v: s.get(f"{v}_right_reason", 1.0))
        print(f"| {source} | {100 * s[f'{source}_ungradable']:.1f} % | {worst} "
              f"{100 * s.get(f'{worst}_right_reason', float('nan')):.1f} % |")
        cv[f"{source}_left_out_ungradable"] = s[f"{source}_ungradable"]

    thresholds, score, oof, scored = fit(rows, size)
    final = apply(rows, thresholds, score, size)
    print("\n## Fitted on everything (the shipped card)\n")
    print("| check | threshold |")
    print("|---|---:|")
    for field, *_ in RULES:
        print(f"| {field} | {thresholds[field]:.4g} |")
    print(f"| score (P ungradable) | {score.threshold:.4g} |")
    if args.extra_eyeq:
        from bench.quality_data import extra_eyeq

        extra = measure_all(extra_eyeq(args.extra_eyeq, args.extra_images), size,
                            args.cache.with_suffix(".extra.jsonl") if args.cache else None, degraded=False)
        print("\n## Independent test: EyeQ-graded EyePACS images never used for fitting (the shipped card)")
        print_tables(apply(extra, thresholds, score, size))
    if not args.no_write:
        write_card(rows, thresholds, score, cv)
        from bench.quality_plots import plot_all

        plot_all(final, thresholds, score, oof, scored, PLOTS)
        print(f"\nWrote {CALIBRATION_FILE.relative_to(REPO)} and the plots in {PLOTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

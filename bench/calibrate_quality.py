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
from bench.quality_fit import HEAD_C, RULES, SCORE_LIMITS, fit_score, fit_thresholds
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


def bundle_features(items: list[Photo], bundle: Path, layers: tuple[str, ...], cache: Path | None,
                    degraded: bool = True) -> dict[str, np.ndarray]:
    """The pooled feature maps (``device.quality_score.pool_mean_std``) of a screening bundle's ``layers`` for every
    photograph and degraded copy that :func:`measure_all` measures, keyed ``source:name:variant``; each image is
    preprocessed as the unit does for that bundle (its size and normalisation)."""
    from tqdm import tqdm

    from device.model.bundle import load_bundle
    from device.quality_score import pool_mean_std

    model = load_bundle(bundle, run_selftest=False)
    key = f"{_code_hash()}-{model.card.sha256[:16]}-{'+'.join(layers)}-{len(items)}-{degraded}"
    if cache and cache.exists():
        z = np.load(cache)
        if str(z["key"]) == key:
            return dict(zip(z["names"].tolist(), z["x"]))
    size, method = model.card.input.size, model.card.input.normalisation
    out: dict[str, np.ndarray] = {}
    for i, photo in enumerate(tqdm(items, desc=f"features of {model.card.id}", mininterval=5)):
        rgb = load_image(photo.path)
        try:
            made = list(copies(photo, rgb, seed=i)) if degraded else [("original", rgb)]
        except ImageError:
            made = [("original", rgb)]
        for variant, img in made:
            try:
                pre = preprocess(img, size=size, method=method)
            except ImageError:  # refused before the gate: the head never runs on it
                continue
            result = model.runtime.run(pre.image)
            out[f"{photo.source}:{photo.name}:{variant}"] = pool_mean_std([result[n] for n in layers])
    if cache:
        np.savez(cache, key=np.array(key), names=np.array(list(out)), x=np.stack(list(out.values())))
    return out


def attach_features(rows: list[dict], features: dict[str, np.ndarray]) -> list[dict]:
    """``rows`` with the bundle's pooled features as ``features`` (None where the model never runs)."""
    return [{**r, "features": features.get(f"{r['source']}:{r['name']}:{r['variant']}")} for r in rows]


def apply(rows: list[dict], thresholds: dict[str, float], score: GradabilityScore, size: int) -> list[dict]:
    """Copies of ``rows`` with ``failed`` (the gate's reason keys joined by '+', '' when gradable)."""
    gate = QualityGate(QualityConfig(**thresholds, max_score=score.threshold), score=score)
    out = []
    for r in rows:
        if r["error"] == "no_fov" and "lit_contrast" in r:
            keys = [unfound_reason(r["lit_contrast"], gate.cfg)]
        else:
            keys = [r["error"]] if r["error"] else gate.failures(dict(r), size, features=r.get("features"))
        out.append({**r, "failed": "+".join(keys)})
    return out


def fit(rows: list[dict], size: int, seed: int = 0,
        head: tuple[str, ...] | None = None) -> tuple[dict[str, float], GradabilityScore, np.ndarray, list]:
    """Thresholds and score fitted on ``rows`` (plus the score's inner out-of-fold predictions); with ``head``
    (a bundle's feature layers, rows carrying ``features``) the score is that bundle's gradability head."""
    thresholds = fit_thresholds(rows)
    score, oof, scored = fit_score(rows, thresholds, size, seed, head_inputs=head)
    return thresholds, score, oof, scored


def cross_validate(rows: list[dict], size: int, seed: int = 0, head: tuple[str, ...] | None = None) -> list[dict]:
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
        thresholds, score, _, _ = fit(train, size, seed, head)
        out += [{**r, "fold": k} for r in apply([r for r in rows if r["group"] in test_groups],
                                                thresholds, score, size)]
    return out


def leave_camera_out(rows: list[dict], size: int, head: tuple[str, ...] | None = None) -> dict[str, list[dict]]:
    """For each non-EyeQ source: the gate fitted without any of its photographs, applied to them."""
    out = {}
    for source in ("idrid", "diaretdb1", "kaggle"):
        train = [r for r in rows if r["source"] != source]
        test = [r for r in rows if r["source"] == source]
        if test:
            thresholds, score, _, _ = fit(train, size, head=head)
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


def _feature_cache(cache: Path | None, suffix: str) -> Path | None:
    return cache.with_suffix(f"{suffix}.features.npz") if cache else None


def prepare_bundle(bundle: Path, layers: tuple[str, ...]) -> None:
    """Add the feature-map outputs the head reads to the bundle, if it lacks them (needs TensorFlow)."""
    from device.model.bundle import load_bundle

    card = load_bundle(bundle, run_selftest=False).card
    if not set(layers) <= {o.name for o in card.outputs}:
        from trainer.export.features import add_feature_outputs_to_bundle

        add_feature_outputs_to_bundle(bundle, layers)
        print(f"Added the outputs {', '.join(layers)} to {bundle} (its signature was removed)")


def write_head(bundle: Path, rows: list[dict], score: GradabilityScore, cv: dict[str, float]) -> None:
    """Write the head fitted on everything into the bundle's card; the old signature no longer covers it."""
    from device.atomic import write_atomic
    from device.model.bundle import load_bundle
    from device.model.card import CARD_FILE, GradabilityHead, ModelCard
    from device.model.signature import SIGNATURE_FILE

    card = load_bundle(bundle, run_selftest=False).card
    n_values = len(score.embedding.weights)
    method = (f"L2 logistic regression (C {HEAD_C:g}) of EyeQ Reject on the gate's {len(score.features)} score "
              f"metrics and the per-channel mean and std of this network's layers {', '.join(score.embedding.inputs)} "
              f"({n_values} values), fitted on the photographs the gate's checks pass (every IDRiD, DiaretDB1 and "
              f"Kaggle one a gradable example); threshold from nested out-of-fold predictions within limits "
              f"{SCORE_LIMITS}; figures: {FOLDS}-fold cross-validation by patient, each camera left out, an "
              f"independent EyeQ set (bench/calibrate_quality.py --bundle, code {_git_head()})")
    head = GradabilityHead(score=score, method=method,
                           data=dict(Counter(r["source"] for r in rows if r["variant"] == "original")),
                           cross_validation=cv, created=datetime.datetime.now(datetime.UTC))
    card = ModelCard.model_validate({**card.model_dump(), "gradability": head.model_dump()})
    (bundle / SIGNATURE_FILE).unlink(missing_ok=True)
    write_atomic(bundle / CARD_FILE, (card.model_dump_json(indent=2) + "\n").encode())
    load_bundle(bundle, run_selftest=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="photographs per source (default: all)")
    parser.add_argument("--model-size", type=int, default=None, help="default: the default bundle's input size")
    parser.add_argument("--cache", type=Path, default=None, help="measurements cache (JSON lines)")
    parser.add_argument("--no-write", action="store_true", help="do not write the card or the plots")
    parser.add_argument("--extra-eyeq", type=Path, default=None,
                        help="an independent test: EyeQ labels (image,quality) of other EyePACS images")
    parser.add_argument("--extra-images", type=Path, default=None, help="folder of those images (<image>.jpeg)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="fit this screening bundle's gradability head instead of the gate's card: its feature "
                             "maps (--layers) are added as outputs if missing, and the head is written into its "
                             "card (sign the bundle again afterwards)")
    parser.add_argument("--layers", default=None,
                        help="comma-separated layers of the bundle's network whose pooled maps the head reads "
                             "(default: trainer.export.features.LITE0_FEATURE_LAYERS, EfficientNet-Lite0 stages 2-5)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="The least populated class")  # small strata (Kaggle: 10 images)
    items = photos(limit=args.limit)
    if not items:
        print("No real photographs under ../shared/data: calibration needs them.", file=sys.stderr)
        return 1
    head = None
    if args.bundle:
        from device.model.bundle import load_bundle
        from trainer.export.features import LITE0_FEATURE_LAYERS

        head = tuple(x for x in args.layers.split(",") if x) if args.layers else LITE0_FEATURE_LAYERS
        size = load_bundle(args.bundle, run_selftest=False).card.input.size
        prepare_bundle(args.bundle, head)
    else:
        size = args.model_size or default_model_size()
    rows = measure_all(items, size, args.cache)
    if head:
        rows = attach_features(rows, bundle_features(items, args.bundle, head, _feature_cache(args.cache, "")))
    counts = Counter(r["source"] for r in rows if r["variant"] == "original")
    print(f"\n{len(rows)} photographs measured at model size {size} px "
          f"({', '.join(f'{s} {n}' for s, n in counts.items())} real ones, the rest degraded copies)")

    judged = cross_validate(rows, size, head=head)
    print(f"\n## Cross-validated ({FOLDS} folds by patient; every figure is on folds the gate was not fitted on)")
    print_tables(judged)
    cv = summary(judged)
    lco = leave_camera_out(rows, size, head)
    print("\n## Each camera left out of the fit (fitted on all other sources, applied to it)\n")
    print("| camera | originals ungradable | degraded copies with the right reason (worst kind) |")
    print("|---|---:|---|")
    for source, res in lco.items():
        s = summary(res)
        worst = min(VARIANTS, key=lambda v: s.get(f"{v}_right_reason", 1.0))
        print(f"| {source} | {100 * s[f'{source}_ungradable']:.1f} % | {worst} "
              f"{100 * s.get(f'{worst}_right_reason', float('nan')):.1f} % |")
        cv[f"{source}_left_out_ungradable"] = s[f"{source}_ungradable"]

    thresholds, score, oof, scored = fit(rows, size, head=head)
    final = apply(rows, thresholds, score, size)
    print("\n## Fitted on everything (the shipped card)\n")
    print("| check | threshold |")
    print("|---|---:|")
    for field, *_ in RULES:
        print(f"| {field} | {thresholds[field]:.4g} |")
    print(f"| score (P ungradable) | {score.threshold:.4g} |")
    if args.extra_eyeq:
        from bench.quality_data import extra_eyeq

        extra_items = extra_eyeq(args.extra_eyeq, args.extra_images)
        extra = measure_all(extra_items, size, args.cache.with_suffix(".extra.jsonl") if args.cache else None,
                            degraded=False)
        if head:
            extra = attach_features(extra, bundle_features(extra_items, args.bundle, head,
                                                           _feature_cache(args.cache, ".extra"), degraded=False))
        print("\n## Independent test: EyeQ-graded EyePACS images never used for fitting (the shipped card)")
        independent = apply(extra, thresholds, score, size)
        print_tables(independent)
        o = [r for r in independent if r["variant"] == "original"]
        for i, g in enumerate(GRADES):
            sel = [r for r in o if r["grade"] == i]
            if sel:
                refused = sum(bool(r["failed"]) for r in sel)
                cv[f"independent_eyeq_{g.lower()}_ungradable"] = round(refused / len(sel), 4)
    if head and not args.no_write:
        from bench.quality_plots import plot_all

        write_head(args.bundle, rows, score, cv)
        plot_all(final, thresholds, score, oof, scored, PLOTS, checks=False, score_file="quality_head.png",
                 score_title="Gradability head of the screening bundle (metrics + its feature maps)")
        print(f"\nWrote the gradability head into {args.bundle / 'model.json'} (its signature was removed: sign it "
              f"again with `python -m trainer sign`) and {(PLOTS / 'quality_head.png').relative_to(REPO)}")
    elif not args.no_write:
        write_card(rows, thresholds, score, cv)
        from bench.quality_plots import plot_all

        plot_all(final, thresholds, score, oof, scored, PLOTS)
        print(f"\nWrote {CALIBRATION_FILE.relative_to(REPO)} and the plots in {PLOTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

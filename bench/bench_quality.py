"""How often the quality gate agrees with experts: per source, per reason, and against the EyeQ grades.

Runs the shipped gate (device/quality.py, default thresholds) the way the unit does (preprocess at the model's
input size, then ``QualityGate.assess``, with the default bundle's gradability head when it has one) on every real
photograph under ../shared/data (bench/quality_data.py) and on degraded copies of every gradable one, and prints:

1. per source and kind of photograph: how many are called ungradable, and with the right reason;
2. per source: the reasons given on the real photographs;
3. the confusion against the EyeQ expert grades (Good / Usable / Reject);
4. the gate's speed at 512 px, side by side with the preprocessing it follows (a ratio: the machine is shared).

The gate's thresholds and score were fitted on these photographs, so the tables here are in-sample; the
cross-validated figures (folds the gate was not fitted on) come from ``python -m bench.calibrate_quality``.

    python -m bench.bench_quality                     # everything, with the default bundle's head (~8 min)
    python -m bench.bench_quality --no-head           # the gate card alone
    python -m bench.bench_quality --limit 20 --csv /tmp/gate.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from bench.quality_data import EXPECTED, GRADES, SOURCES, VARIANTS, Photo, copies, photos
from device.errors import BlankImageError, ImageError, ImageTooSmallError, NotFundusError
from device.imageio import load_image
from device.preprocess import preprocess
from device.quality import REASONS, QualityGate

KEY_OF = {text: key for key, text in REASONS.items()}
DEFAULT_MODEL_SIZE = 256  # the bundled models' input size (models/*/model.json); --model-size changes it


def default_model_size() -> int:
    """Input size of the default model bundle (models/DEFAULT), else DEFAULT_MODEL_SIZE."""
    import json

    root = Path(__file__).resolve().parents[1] / "models"
    try:
        bundle = (root / "DEFAULT").read_text().strip()
        return int(json.loads((root / bundle / "model.json").read_text())["input"]["size"])
    except (OSError, ValueError, KeyError):
        return DEFAULT_MODEL_SIZE


def assess(gate: QualityGate, rgb: np.ndarray, size: int, model=None) -> tuple[list[str], dict[str, float]]:
    """The failed-check keys (empty: gradable) and metrics, as the unit's pipeline would decide.

    Args:
        model: a loaded bundle (``device.model.bundle.load_bundle``) whose gradability head replaces the gate's
            score, as in device/pipeline.py; None: the gate alone.
    """
    try:
        pre = preprocess(rgb, size=size, method=model.contract.normalisation if model else "per_image")
    except (BlankImageError, NotFundusError, ImageTooSmallError) as err:
        report = QualityGate.report_for_error(err, rgb, gate.cfg)
        return [KEY_OF.get(r, r) for r in report.reasons], dict(report.metrics)
    if model is not None and model.contract.gradability is not None:
        report = gate.assess(rgb, pre, features=model.predict(pre.image).features, score=model.contract.gradability)
    else:
        report = gate.assess(rgb, pre)
    return [KEY_OF.get(r, r) for r in report.reasons], dict(report.metrics)


def run(items: list[Photo], size: int, gate: QualityGate | None = None, progress: bool = True,
        model=None) -> list[dict]:
    """One row per (photograph, variant): source, name, grade, variant, failed keys, metrics (``model``: see
    :func:`assess`)."""
    gate = gate or QualityGate()
    if progress:
        from tqdm import tqdm  # the train extra; the unit's tests run without it

        items = tqdm(items, desc="gate", mininterval=5)
    rows = []
    for i, photo in enumerate(items):
        rgb = load_image(photo.path)
        try:
            made = list(copies(photo, rgb, seed=i))
        except ImageError:  # the original's FOV is not found: no degraded copies can be made from it
            made = [("original", rgb)]
        for variant, img in made:
            keys, metrics = assess(gate, img, size, model)
            rows.append({"source": photo.source, "name": photo.name, "group": photo.group,
                         "grade": "" if photo.grade is None else photo.grade, "variant": variant,
                         "failed": "+".join(keys), **{k: round(float(v), 6) for k, v in metrics.items()}})
    return rows


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.1f} %)" if d else "—"


def print_tables(rows: list[dict]) -> None:
    """The three agreement tables (markdown), for the sources present in ``rows``."""
    by = defaultdict(list)
    for r in rows:
        by[(r["source"], r["variant"])].append(r)
    present = list(dict.fromkeys(r["source"] for r in rows))
    sources = [s for s in SOURCES if s in present] + [s for s in present if s not in SOURCES]
    eyeq_sources = [s for s in sources if s.startswith("eyeq")]
    print("\n### Ungradable, per source and kind of photograph (degraded copies: with the right reason)\n")
    variants = [v for v in ("original", *VARIANTS) if any(by.get((s, v)) for s in sources)]
    print("| kind | " + " | ".join(sources) + " |")
    print("|---|" + "---:|" * len(sources))
    for variant in variants:
        cells = []
        for s in sources:
            sel = by.get((s, variant), [])
            if variant == "original" and s.startswith("eyeq"):
                sel = [r for r in sel if r["grade"] == 0]
            if variant == "original":
                cells.append(_pct(sum(bool(r["failed"]) for r in sel), len(sel)))
            else:
                right = sum(bool(set(r["failed"].split("+")) & EXPECTED[variant]) for r in sel)
                cells.append(_pct(right, len(sel)))
        label = "original (EyeQ: Good only)" if variant == "original" else variant
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n### Reasons given on the real photographs (a photograph can have several)\n")
    print("| source | photographs | ungradable | reasons |")
    print("|---|---:|---:|---|")
    for s in sources:
        sel = by.get((s, "original"), [])
        if not sel:
            continue
        reasons = Counter(k for r in sel for k in r["failed"].split("+") if k)
        text = ", ".join(f"{k} {n}" for k, n in reasons.most_common())
        print(f"| {s} | {len(sel)} | {_pct(sum(bool(r['failed']) for r in sel), len(sel))} | {text} |")
    for source in eyeq_sources:
        _print_eyeq(source, by[(source, "original")])


def _print_eyeq(source: str, eyeq: list[dict]) -> None:
    """The confusion of the gate's verdicts against the EyeQ grades of one source."""
    if eyeq:
        print(f"\n### Against the EyeQ expert grades ({source})\n")
        print("| EyeQ grade | images | called gradable | called ungradable | reasons |")
        print("|---|---:|---:|---:|---|")
        for g, name in enumerate(GRADES):
            sel = [r for r in eyeq if r["grade"] == g]
            bad = sum(bool(r["failed"]) for r in sel)
            reasons = Counter(k for r in sel for k in r["failed"].split("+") if k)
            text = ", ".join(f"{k} {n}" for k, n in reasons.most_common())
            print(f"| {g} {name} | {len(sel)} | {_pct(len(sel) - bad, len(sel))} | {_pct(bad, len(sel))} | {text} |")


def speed(items: list[Photo], repeats: int = 5, model=None) -> tuple[float, float, float]:
    """Median ms of preprocess(512 px), of the gate on its result and (with a bundle's head) of pooling the
    model's feature maps and scoring them, interleaved on the same photographs."""
    from device.quality_score import pool_mean_std

    gate = QualityGate()
    head = model.contract.gradability if model is not None else None
    t_pre, t_gate, t_head = [], [], []
    for photo in items:
        rgb = load_image(photo.path)
        if head is not None:
            small = preprocess(rgb, size=model.contract.input_size, method=model.contract.normalisation)
            outputs = model.runtime.run(small.image)
        for _ in range(repeats):
            t = time.perf_counter()
            pre = preprocess(rgb, size=512)
            t_pre.append(time.perf_counter() - t)
            t = time.perf_counter()
            report = gate.assess(rgb, pre)
            t_gate.append(time.perf_counter() - t)
            if head is not None:
                t = time.perf_counter()
                head.evaluate(report.metrics, pool_mean_std([outputs[n] for n in head.embedding.inputs]))
                t_head.append(time.perf_counter() - t)
    return (1000 * float(np.median(t_pre)), 1000 * float(np.median(t_gate)),
            1000 * float(np.median(t_head)) if t_head else float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="photographs per source (default: all)")
    parser.add_argument("--model-size", type=int, default=None,
                        help="model input size the unit preprocesses to (default: the default bundle's)")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per photograph here")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed row")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="a model bundle whose gradability head the unit would use (default: the default bundle)")
    parser.add_argument("--no-head", action="store_true", help="judge the gate alone, without any bundle's head")
    args = parser.parse_args(argv)
    items = photos(limit=args.limit)
    if not items:
        print("No real photographs under ../shared/data: this benchmark needs them.", file=sys.stderr)
        return 1
    model = None
    if not args.no_head:
        from device.model.bundle import default_model_dir, load_bundle

        model = load_bundle(args.bundle or default_model_dir())
        if model.contract.gradability is None:
            model = None
    size = model.contract.input_size if model else args.model_size or default_model_size()
    print(f"Gradability score: {'the gradability head of bundle ' + model.id if model else 'the gate card'}")
    rows = run(items, size, model=model)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with args.csv.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    counts = Counter(p.source for p in items)
    print(f"\n{len(rows)} photographs assessed ({', '.join(f'{s} {n}' for s, n in counts.items())} real ones, "
          f"and degraded copies of the gradable ones), preprocessed at the model size {size} px")
    print_tables(rows)
    if not args.no_speed:
        sample = [p for p in items if p.source in ("kaggle", "diaretdb1", "idrid")][:: 10][:20]
        pre_ms, gate_ms, head_ms = speed(sample, model=model)
        print(f"\n### Speed (median of {len(sample)} real photographs x 5, interleaved; shared machine)\n")
        print("| stage | median ms | ratio to preprocess |")
        print("|---|---:|---:|")
        print(f"| preprocess to 512 px (FOV, crop, standardise) | {pre_ms:.2f} | 1.00 |")
        print(f"| quality gate on the 512 px crop | {gate_ms:.2f} | {gate_ms / pre_ms:.2f} |")
        if model is not None:
            print(f"| bundle head: pool the feature maps + score (inference not counted: it runs anyway) | "
                  f"{head_ms:.2f} | {head_ms / pre_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Would a pretrained backbone make the gate's gradability score catch more EyeQ Rejects? (offline experiment)

Issue 13 asks for EyeQ Reject caught >= 80 % with Good <= 5 % and Usable <= 20 % refused; the score on the gate's
12 hand-made metrics stops at 77 % (cross-validated): at the Usable limit it misses Rejects whose fault is a local
artefact (a coloured flare, a dark blotch, dust) rather than blur or shadow. This script measures the same score
with the pooled 1280 features of the ImageNet EfficientNet-Lite0 (trainer/backbones, the backbone of the bundled
screening model) added to its inputs, fitted and judged exactly as bench/calibrate_quality.py does it:

* the checks' thresholds from bench/quality_fit.py on the training folds, unchanged;
* an L2 logistic regression of "EyeQ Reject" on the training originals every check passes (every IDRiD,
  DiaretDB1 and Kaggle photograph a gradable example), its threshold from nested 5-fold out-of-fold predictions
  within bench/quality_fit.py's SCORE_LIMITS;
* 5-fold cross-validation by patient, each camera left out in turn, and the independent EyeQ set judged by the
  fit on everything.

Only the real photographs are judged (degraded copies are not run through the backbone here). It needs
TensorFlow (the train extra) and is not part of the unit: the unit runs without TensorFlow, so shipping such a
score means a LiteRT export of the backbone and a card that carries its 1280 weights (docs/unit.md).

    python -m bench.quality_backbone --cache /tmp/q.jsonl --sizes 128,256 \\
        --extra-eyeq labels.csv --extra-images DIR          # the cache of bench/calibrate_quality.py
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from bench.calibrate_quality import FOLDS, measure_all
from bench.quality_data import extra_eyeq, photos
from bench.quality_fit import INNER_FOLDS, SCORE_C, _design, choose_threshold, fit_thresholds, passing_rules
from device.errors import ImageError
from device.imageio import load_image
from device.preprocess import preprocess
from device.quality import QualityConfig, QualityGate

BATCH = 32
LITE0_MEAN, LITE0_STD = 127.0, 128.0  # the backbone's input scaling (trainer/backbones/efficientnet_lite.py)
GROUPS = (("EyeQ Good", "eyeq", 0), ("EyeQ Usable", "eyeq", 1), ("EyeQ Reject", "eyeq", 2),
          ("IDRiD", "idrid", None), ("DiaretDB1", "diaretdb1", None), ("Kaggle", "kaggle", None))


def _key(row: dict) -> str:
    return f"{row['source']}:{row['name']}"


def embeddings(items, size: int, cache: Path | None) -> dict[str, np.ndarray]:
    """Pooled Lite0 features of each photograph's FOV crop at ``size`` px (the unit's preprocessing)."""
    if cache and cache.exists():
        z = np.load(cache)
        return dict(zip(z["keys"].tolist(), z["x"]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer.backbones.efficientnet_lite import build_efficientnet_lite0, load_lite0_weights

    net = build_efficientnet_lite0(size, weights=load_lite0_weights())
    out: dict[str, np.ndarray] = {}
    keys: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            x = (np.stack(batch).astype(np.float32) - LITE0_MEAN) / LITE0_STD
            f = np.asarray(net.predict(x, verbose=0))
            for k, v in zip(keys, f.mean(axis=(1, 2)) if f.ndim == 4 else f):
                out[k] = v.astype(np.float32)
            keys.clear()
            batch.clear()

    for p in items:
        rgb = load_image(p.path)
        try:
            pre = preprocess(rgb, size=size)
        except ImageError:  # refused before the gate: no features needed
            continue
        keys.append(f"{p.source}:{p.name}")
        batch.append(pre.rgb)
        if len(batch) == BATCH:
            flush()
    flush()
    if cache:
        np.savez(cache, keys=np.array(list(out)), x=np.stack(list(out.values())))
    return out


class BackboneScore:
    """L2 logistic regression on the 12 score metrics and (optionally) the standardised backbone features."""

    def __init__(self, train: list[dict], emb: dict[str, np.ndarray] | None, c: float) -> None:
        from sklearn.linear_model import LogisticRegression

        self.emb = emb
        h = _design(train)
        self.h_mean, self.h_scale = h.mean(axis=0), h.std(axis=0) + 1e-9
        if emb is not None:
            e = np.stack([emb[_key(r)] for r in train])
            self.e_mean, self.e_scale = e.mean(axis=0), e.std(axis=0) + 1e-6
        y = np.array([r["grade"] == 2 for r in train], int)
        self.lr = LogisticRegression(C=c, max_iter=5000).fit(self._x(train), y)

    def _x(self, rows: list[dict]) -> np.ndarray:
        parts = [(_design(rows) - self.h_mean) / self.h_scale]
        if self.emb is not None:
            parts.append((np.stack([self.emb[_key(r)] for r in rows]) - self.e_mean) / self.e_scale)
        return np.hstack(parts)

    def predict(self, rows: list[dict]) -> np.ndarray:
        return self.lr.predict_proba(self._x(rows))[:, 1]


def fit(rows: list[dict], emb, c: float, size: int, seed: int = 0):
    """Thresholds, score and score threshold fitted on ``rows`` (nested out-of-fold, as bench/quality_fit.py)."""
    from sklearn.model_selection import StratifiedGroupKFold

    thresholds = fit_thresholds(rows)
    train = [r for r in passing_rules(rows, thresholds, size) if emb is None or _key(r) in emb]
    strata = [f"{r['source']}{r['grade']}" for r in train]
    groups = [r["group"] for r in train]
    oof = np.zeros(len(train))
    for tr, te in StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=seed).split(train, strata, groups):
        oof[te] = BackboneScore([train[i] for i in tr], emb, c).predict([train[i] for i in te])
    return thresholds, BackboneScore(train, emb, c), choose_threshold(oof, train)


def judge(fitted, rows: list[dict], size: int) -> list[bool]:
    """Ungradable or not, for each original in ``rows``, by a fitted (thresholds, score, threshold)."""
    thresholds, score, t = fitted
    gate = QualityGate(QualityConfig(**thresholds, max_score=1.0))
    out = []
    for r in rows:
        if r["error"] or gate.failures(dict(r), size):
            out.append(True)
        else:
            out.append(bool(score.predict([r])[0] > t) if score.emb is None or _key(r) in score.emb else False)
    return out


def rates(rows: list[dict], bad: list[bool]) -> dict[str, str]:
    """'n/N (x %)' per group of GROUPS present in ``rows``."""
    out = {}
    for label, source, grade in GROUPS:
        sel = [b for r, b in zip(rows, bad)
               if r["source"].startswith(source) and (grade is None or r["grade"] == grade)]
        if sel:
            out[label] = f"{sum(sel)}/{len(sel)} ({100 * sum(sel) / len(sel):.1f} %)"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="bench/calibrate_quality.py's measurements cache")
    parser.add_argument("--sizes", default="256", help="backbone input sizes, comma-separated (default 256)")
    parser.add_argument("--c", type=float, default=0.003, help="inverse L2 strength of the score (default 0.003)")
    parser.add_argument("--extra-eyeq", type=Path, default=None, help="independent EyeQ labels (image,quality)")
    parser.add_argument("--extra-images", type=Path, default=None, help="folder of those images")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="The least populated class")
    from sklearn.model_selection import StratifiedGroupKFold

    size = 256  # the gate's checks, as calibrated for the default model
    items = photos()
    if not items:
        print("No real photographs under ../shared/data: this experiment needs them.", file=sys.stderr)
        return 1
    rows = measure_all(items, size, args.cache)
    extra_items = extra_eyeq(args.extra_eyeq, args.extra_images) if args.extra_eyeq else []
    extra = measure_all(extra_items, size, args.cache.with_suffix(".extra.jsonl"), degraded=False) if extra_items \
        else []
    originals = [r for r in rows if r["variant"] == "original"]
    strata = [f"{r['source']}{r['grade']}" for r in originals]
    groups = [r["group"] for r in originals]
    splits = list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=0).split(originals, strata, groups))

    print("| score inputs | judged on | " + " | ".join(g[0] for g in GROUPS) + " |")
    print("|---|---|" + "---:|" * len(GROUPS))
    settings = [("12 metrics (the shipped score)", None)]
    for s in (int(x) for x in args.sizes.split(",")):
        emb = embeddings(items + extra_items, s, args.cache.with_suffix(f".lite0_{s}.npz"))
        settings.append((f"12 metrics + Lite0 {s} px", emb))
    for name, emb in settings:
        judged, bad = [], []
        for _, te in splits:
            test_groups = {groups[i] for i in te}
            fitted = fit([r for r in rows if r["group"] not in test_groups], emb, args.c if emb else SCORE_C, size)
            test = [r for r in originals if r["group"] in test_groups]
            judged += test
            bad += judge(fitted, test, size)
        lines = [("cross-validated", rates(judged, bad))]
        for source in ("idrid", "diaretdb1", "kaggle"):
            fitted = fit([r for r in rows if r["source"] != source], emb, args.c if emb else SCORE_C, size)
            test = [r for r in originals if r["source"] == source]
            lines.append((f"{source} left out", rates(test, judge(fitted, test, size))))
        if extra:
            fitted = fit(rows, emb, args.c if emb else SCORE_C, size)
            lines.append(("independent EyeQ", rates(extra, judge(fitted, extra, size))))
        for where, res in lines:
            print(f"| {name} | {where} | " + " | ".join(res.get(g[0], "") for g in GROUPS) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

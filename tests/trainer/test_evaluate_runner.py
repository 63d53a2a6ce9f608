"""The DiaretDB1 evaluator end to end: synthetic folder through the CLI, model-space predictors, real-data oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import cli
from trainer.data.diaretdb1 import load_diaretdb1
from trainer.evaluate import EvaluationConfig
from trainer.evaluate.predictors import ModelPredictor, load_predictor
from trainer.evaluate.runner import evaluate_diaretdb1
from trainer.synthetic import write_diaretdb1_folder

TYPES = ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")
REQUIRED = ("auc", "auc_ci95", "sensitivity", "specificity")
PER_TYPE = ("image_sensitivity_50", "image_sensitivity_1px", "froc_sensitivity_at_1.5", "froc_score", "n_lesions")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddb1")
    write_diaretdb1_folder(root, n_images=8, width=400, height=308, seed=3)
    return root


@pytest.mark.slow
def test_synthetic_folder_evaluates_end_to_end_through_the_cli(synthetic_root, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate", "--model", "oracle", "--data", str(synthetic_root), "--out",
                                      str(out), "--set", "n_bootstrap=50", "--overlays", "2",
                                      "--publish", str(tmp_path / "published")])
    assert result.exit_code == 0, result.output
    assert "all (8 images): AUC 1.000" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in REQUIRED:
        assert key in metrics and key in metrics["test"]
    assert metrics["auc"] == 1.0 and metrics["sensitivity"] == 1.0 and metrics["specificity"] == 1.0
    db = load_diaretdb1(synthetic_root)
    assert metrics["n_images"] == 8 and metrics["test"]["n_images"] == len(db.test_ids)
    for t in TYPES:
        lesion = metrics["lesions"][t]
        assert set(PER_TYPE) <= set(lesion)
        if lesion["n_lesions"]:  # the oracle finds every lesion with no false positive
            assert lesion["image_sensitivity_50"] == 1.0 and lesion["froc_sensitivity_at_1.5"] == 1.0
            assert lesion["froc_score"] == 1.0 and lesion["operating_point"]["fp_per_image"] == 0.0
    assert metrics["model"] == {"id": "oracle", "decision_threshold": 0.5,
                                "decision_threshold_source": "default 0.5 (oracle)"}
    assert metrics["protocol"]["region_threshold"] == 0.65 and metrics["protocol"]["n_bootstrap"] == 50
    for name in ("report.md", "roc.png", "froc.png", "per_image.csv"):
        assert (out / name).stat().st_size > 100
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 2 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in overlays)
    report = (out / "report.md").read_text()
    assert "| AUC | 1.000" in report and "0.954" in report and "91.0 %" in report  # ours beside the paper's
    assert "overlays/" in report
    # the folder meant for the repository gets no overlays and no links to them
    published = tmp_path / "published"
    assert sorted(p.name for p in published.iterdir()) == ["froc.png", "metrics.json", "report.md", "roc.png"]
    assert "overlays/" not in (published / "report.md").read_text()


def test_model_space_predictor_maps_its_cam_back_through_the_crop_geometry(synthetic_root, tmp_path):
    db = load_diaretdb1(synthetic_root)
    seen = []

    def zero_model(image):  # a model whose CAM is flat zero: no regions anywhere, nothing detected
        seen.append(image.shape)
        return 0.3, np.zeros((image.shape[0] // 16, image.shape[1] // 16), np.float32)

    predictor = ModelPredictor(zero_model, 128, "zero")
    result = evaluate_diaretdb1(synthetic_root, predictor, tmp_path, EvaluationConfig(n_bootstrap=0),
                                n_overlays=0, progress=False, db=db)
    assert seen == [(128, 128, 3)] * 8
    m = result.metrics
    assert m["sensitivity"] == 0.0 and m["regions_per_image"] == 0.0
    for t in TYPES:
        le = m["lesions"][t]
        if le["n_lesions"]:
            assert le["image_sensitivity_1px_ungated"] == 0.0 and le["froc_score"] == 0.0
    # a CAM that is high on the lower half of the crop lands on the lower half of the photograph
    prob, heat = ModelPredictor(lambda im: (0.9, np.repeat([[0.0]] * 4 + [[1.0]] * 4, 8, axis=1)), 128, "half")(
        "image001", db.image("image001"))
    rows = np.flatnonzero(heat.max(axis=1) > 0.5)
    cy = db.fov_mask.nonzero()[0].mean()
    assert prob == 0.9 and heat.shape == db.fov_mask.shape and rows.min() > cy - 0.1 * heat.shape[0]


def test_errors_are_one_sentence(synthetic_root, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", "--model", str(tmp_path), "--data", str(synthetic_root), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "is neither a model bundle (model.json + model.tflite) nor a training run folder" in result.output
    result = runner.invoke(cli, ["evaluate", "--model", "oracle", "--data", str(synthetic_root), "--out",
                                 str(tmp_path / "o"), "--set", "connectivity=6"])
    assert result.exit_code != 0 and "Evaluation settings: field 'connectivity' is invalid" in result.output
    with pytest.raises(Exception, match="needs the dataset's ground truth"):
        load_predictor("oracle")
    result = runner.invoke(cli, ["evaluate", "--model", "oracle", "--data", str(synthetic_root), "--out",
                                 str(tmp_path / "o"), "--decision-threshold", "1.5"])
    assert result.exit_code != 0 and "is not 'auto' or a number between 0 and 1" in result.output


def test_decision_threshold_sources(tmp_path):
    from trainer.evaluate.predictors import run_threshold

    assert run_threshold(tmp_path) == (0.5, "default 0.5 (the run folder has no val_predictions.csv)")
    rows = ["image,label,prob_referable"] + [f"n{i},0,{0.60 + i / 100:.2f}" for i in range(5)] + \
        [f"r{i},1,{0.70 + i / 100:.2f}" for i in range(5)]
    (tmp_path / "val_predictions.csv").write_text("\n".join(rows) + "\n")
    value, source = run_threshold(tmp_path)
    assert 0.64 < value <= 0.70 and "Youden J on the run's 10 EyePACS validation predictions" in source
    oracle = load_predictor("oracle", truth=lambda i: (True, np.zeros((2, 2), bool)), threshold="0.7")
    assert (oracle.decision_threshold, oracle.threshold_source) == (0.7, "given on the command line")


@pytest.mark.real_data
@pytest.mark.slow
def test_oracle_on_the_real_diaretdb1_ground_truth_scores_one(diaretdb1_root, tmp_path):
    db = load_diaretdb1(diaretdb1_root)
    # train and test images with all four lesion types, others with some, and healthy ones (test 61: 28+/33-)
    ids = ["image002", "image005", "image008", "image009", "image011", "image015", "image020", "image021",
           "image028", "image030", "image031"]

    def truth(image_id):
        masks = db.lesion_masks(image_id)
        union = np.logical_or.reduce(list(masks.values()))
        return bool(union.any()), union

    predictor = load_predictor("oracle", truth=truth)
    result = evaluate_diaretdb1(diaretdb1_root, predictor, tmp_path, EvaluationConfig(n_bootstrap=20),
                                n_overlays=0, image_ids=ids, progress=False, db=db)
    m = result.metrics
    assert m["n_images"] == len(ids) and m["auc"] == 1.0 and m["test"]["auc"] == 1.0
    assert (m["n_diseased"], m["n_healthy"]) == (8, 3) and m["image_specificity"] == 1.0
    for t in TYPES:
        le = m["lesions"][t]
        assert le["n_lesions"] > 0, t
        assert le["image_sensitivity_50"] == 1.0 and le["image_sensitivity_1px"] == 1.0
        assert le["froc_sensitivity_at_1.5"] == 1.0 and le["froc_score"] == 1.0
        assert le["operating_point"]["fp_per_image"] == 0.0


@pytest.mark.slow
def test_a_tflite_bundle_evaluates_through_the_units_runtime(synthetic_root, tmp_path):
    from tests.helpers import tiny_cam_model
    from trainer.export.bundle import ExportOptions, export_bundle

    model, _ = tiny_cam_model()
    export_bundle(model, ExportOptions(format="float16", model_id="tiny-f16", out_root=tmp_path / "models",
                                       synthetic_held_out=16, selftest_images=1))
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(tmp_path / "models" / "tiny-f16"), "--data",
                                      str(synthetic_root), "--out", str(out), "--set", "n_bootstrap=20",
                                      "--set", "normalisation=minmax", "--overlays", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["id"] == "tiny-f16" and metrics["model"]["decision_threshold_source"] == "model card"
    # min-max normalisation: every non-flat CAM has a region
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["regions_per_image"] >= 1.0
    assert metrics["protocol"]["normalisation"] == "minmax" and len(list((out / "overlays").glob("*.png"))) == 1
    assert all(0.0 <= metrics["lesions"][t]["froc_score"] <= 1.0 for t in TYPES if metrics["lesions"][t]["n_lesions"])

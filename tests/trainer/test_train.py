"""``train``: a tiny run end to end, the run folder, loading the best model, and refusing to clobber a run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from device.errors import ConfigError
from trainer.training.config import load_train_config
from trainer.training.train import augment_placement, load_run_model, train, validate_run

RUN_FILES = ("config.json", "version.json", "data.json", "history.csv", "history.json", "curves.png", "roc.png",
             "val_predictions.csv", "summary.json", "best.weights.h5", "last.weights.h5", "checkpoint.npz")


@pytest.mark.slow
def test_tiny_run_writes_a_complete_run_folder(tf_run):
    run_dir, summary, lines = tf_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs_done"] == 2 and summary["backend"] == "tensorflow"
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert summary["best_val_auc"] == max(h["val_auc"] for h in history)
    assert history[summary["best_epoch"] - 1]["val_auc"] == summary["best_val_auc"]
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.0099])  # 1 % per epoch
    with open(run_dir / "history.csv") as handle:
        assert [r["epoch"] for r in csv.DictReader(handle)] == ["1", "2"]
    data = json.loads((run_dir / "data.json").read_text())
    assert data["train"]["images"] + data["val"]["images"] == 16
    train_patients = data["train"]["patients"]
    assert train_patients + data["val"]["patients"] == 8  # split by patient: no patient in both
    roc = summary["val_roc"]
    assert roc["auc"] == summary["best_val_auc"] and roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    version = json.loads((run_dir / "version.json").read_text())
    assert version["code_version"] and version["backend"] == "tensorflow"
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    assert lines[0].startswith("training tiny: 12 train / 4 val images at 32 px")
    assert lines[0].endswith("augmentation: pipeline")  # CPU only: OpenCV in the input threads
    assert lines[1].startswith("epoch 1/2") and "val_auc" in lines[1] and "ETA" in lines[1]


@pytest.mark.slow
def test_best_model_loads_with_the_cam_contract_and_reproduces_the_validation_predictions(tf_run):
    run_dir, summary, _ = tf_run
    model = load_run_model(run_dir)
    assert tuple(model.output["probs"].shape) == (None, 2) and tuple(model.output["cam"].shape) == (None, 2, 2)
    from trainer.training.input_pipeline import BatchSequence, load_images

    cfg = load_train_config(preset=None, path=run_dir / "config.json")
    images = load_images(cfg.data, cfg.input_size)
    val = images.indices("val")
    probs = model.predict(BatchSequence(images, val, 4), verbose=0)["probs"][:, 1]
    with open(run_dir / "val_predictions.csv") as handle:
        saved = {r["image"]: float(r["prob_referable"]) for r in csv.DictReader(handle)}
    np.testing.assert_allclose(probs, [saved[i] for i in images.ids[val]], atol=1e-5)
    last = load_run_model(run_dir, which="last")
    assert len(last.get_weights()) == len(model.get_weights())


@pytest.mark.slow
def test_an_existing_run_is_never_overwritten_and_resume_needs_the_same_config(tf_run, synthetic_kaggle):
    run_dir, _, _ = tf_run
    cfg = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle), "epochs": 2})
    with pytest.raises(ConfigError, match=r"already holds a run; pass --resume to continue it"):
        train(cfg, run_dir)
    other = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle), "epochs": 2, "l2": 0.001})
    with pytest.raises(ConfigError, match=r"config differs from the one .* was started with; resume with "
                                          r"--resume .* alone .*, changing at most epochs, time_budget_minutes"):
        train(other, run_dir, resume=True)
    # Resuming a finished run trains nothing more and reports the same best epoch.
    again = train(cfg, run_dir, resume=True, log=lambda line: None)
    best_epoch = json.loads((run_dir / "summary.json").read_text())["best_epoch"]
    assert again["epochs_done"] == 2 and again["best_epoch"] == best_epoch


def test_missing_run_folder_and_missing_checkpoint_are_one_sentence(tmp_path, synthetic_kaggle):
    with pytest.raises(ConfigError, match=r"is not a run folder \(no config.json\); give the folder `train` wrote\."):
        load_run_model(tmp_path)
    cfg = load_train_config("tiny", overrides={"data.path": str(synthetic_kaggle)})
    with pytest.raises(ConfigError, match=r"There is no checkpoint in .* to resume from; start the run without "
                                          r"--resume\."):
        train(cfg, tmp_path / "new", resume=True)


def test_a_data_folder_that_does_not_exist_fails_before_training(tmp_path):
    cfg = load_train_config("tiny", overrides={"data.path": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"does not exist; check the path and try again\."):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_augmentation_placement_follows_the_measurement_unless_set():
    cfg = load_train_config("paper")
    assert augment_placement(cfg, "cpu") == "pipeline" and augment_placement(cfg, "gpu") == "device"
    forced = load_train_config("paper", overrides=["augment.placement=device"])
    assert augment_placement(forced, "cpu") == "device"
    off = load_train_config("paper", overrides=["augment.enabled=false"])
    assert augment_placement(off, "gpu") is None


@pytest.mark.slow
def test_validate_run_reproduces_the_best_auc_and_supports_flip_tta(tf_run):
    run_dir, summary, _ = tf_run
    plain = validate_run(run_dir)
    assert plain["auc"] == pytest.approx(summary["best_val_auc"], abs=1e-6)
    assert (plain["images"], plain["tta_flip"], plain["which"]) == (4, False, "best")
    tta = validate_run(run_dir, tta_flip=True)
    assert tta["tta_flip"] and 0.0 <= tta["auc"] <= 1.0


@pytest.mark.slow
def test_cli_resume_may_change_only_the_run_control_fields(tf_run):
    from click.testing import CliRunner

    from trainer.cli import cli

    run_dir, _, _ = tf_run
    bad = CliRunner().invoke(cli, ["train", "--resume", str(run_dir), "--set", "width=0.5"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    assert "changing at most epochs, time_budget_minutes, validate_every, checkpoint_every" in bad.output
    assert json.loads((run_dir / "config.json").read_text())["width"] == 0.0625  # the frozen config is kept

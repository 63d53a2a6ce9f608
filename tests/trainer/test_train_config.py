"""Training config: the paper preset is exactly the paper's recipe; bad configs fail early with field and reason."""

from __future__ import annotations

import json

import pytest

from device.errors import ConfigError
from trainer.training.config import TrainConfig, load_train_config, preset_names


def test_paper_preset_is_exactly_the_recipe_of_design_2_2():
    cfg = load_train_config("paper")
    assert (cfg.input_size, cfg.width, cfg.epochs) == (512, 1.0, 150)
    assert cfg.optimizer.learning_rate == 0.01 and cfg.optimizer.momentum == 0.8
    assert cfg.optimizer.decay_per_epoch == 0.01 and not cfg.optimizer.nesterov
    assert cfg.l2 == 0.0005 and cfg.class_weight == "balanced"
    aug = cfg.augment
    assert aug.enabled and aug.brightness > 0 and aug.contrast > 0 and aug.rotation_deg > 0 and aug.hflip and aug.vflip
    assert cfg.data.normalisation == "per_image" and cfg.data.val_fraction == 0.2
    assert not cfg.tta_flip and cfg.early_stopping_patience is None and cfg.time_budget_minutes is None
    # The built-in defaults are the paper too, so a config file that names only the data is the paper's recipe.
    defaults = TrainConfig(name="paper", data={"path": "../shared/data/eyepacs_256"})
    assert defaults == cfg


def test_improved_preset_differs_from_paper_only_in_documented_ways():
    paper = load_train_config("paper").model_dump()
    improved = load_train_config("improved").model_dump()
    changed = {k for k in paper if paper[k] != improved[k]}
    assert changed == {"name", "epochs", "early_stopping_patience", "tta_flip", "data"}
    assert improved["data"]["normalisation"] == "local_contrast"
    assert {k for k in paper["data"] if paper["data"][k] != improved["data"][k]} == {"normalisation"}
    assert set(preset_names()) >= {"paper", "improved", "tiny"}


def test_overrides_are_parsed_as_toml_values_and_dotted_keys():
    cfg = load_train_config("tiny", overrides=["epochs=7", "width=0.125", "augment.hflip=false",
                                               "data.path=/some/folder", "tta_flip=true"])
    assert cfg.epochs == 7 and cfg.width == 0.125 and cfg.augment.hflip is False
    assert cfg.data.path == "/some/folder" and cfg.tta_flip is True


def test_a_run_folder_config_json_reloads_identically(tmp_path):
    cfg = load_train_config("improved", overrides={"width": 0.25, "data.path": "x"})
    path = tmp_path / "config.json"
    path.write_text(cfg.model_dump_json())
    assert load_train_config(preset=None, path=path) == cfg


def test_toml_file_is_merged_over_the_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('epochs = 3\n[optimizer]\nmomentum = 0.9\n')
    cfg = load_train_config("paper", path=path)
    assert cfg.epochs == 3 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.learning_rate == 0.01


@pytest.mark.parametrize("overrides, message", [
    (["input_size=100"], "field 'input_size' is invalid (must be a multiple of 16"),
    (["optimizer.momentum=1.5"], "field 'optimizer.momentum' is invalid (Input should be less than 1"),
    (["epochs=0"], "field 'epochs' is invalid (Input should be greater than or equal to 1"),
    (["augment.spin=3"], "field 'augment.spin' is invalid (Extra inputs are not permitted"),
    (["batch_size=30", "num_devices=4"], "field 'num_devices' is invalid (batch_size 30 must be divisible by "
                                         "num_devices 4"),
    (["data.normalisation=clahe"], "field 'data.normalisation' is invalid (Input should be 'per_image', "
                                   "'local_contrast' or 'scale_127'"),
    (["data.workers=many"], "field 'data.workers' is invalid (must be 'auto' (one thread per CPU core) or a whole "
                            "number of threads from 0 to 256, got 'many')"),
    (["data.workers=-2"], "field 'data.workers' is invalid (must be 'auto' (one thread per CPU core) or a whole "
                          "number of threads from 0 to 256, got -2)"),
    (["data.workers=true"], "field 'data.workers' is invalid (must be 'auto' (one thread per CPU core) or a whole "
                            "number of threads from 0 to 256, got True)"),
    (["data.preload=yes"], "field 'data.preload' is invalid (Input should be 'auto', 'float32', 'float16' or 'off'"),
    (["validate_every=0"], "field 'validate_every' is invalid (Input should be greater than or equal to 1"),
    (["checkpoint_every=1.5"], "field 'checkpoint_every' is invalid (Input should be a valid integer"),
    (["time_budget_minutes=0"], "field 'time_budget_minutes' is invalid (Input should be greater than 0"),
])
def test_invalid_values_name_the_field_and_the_reason(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_train_config("paper", overrides=overrides)
    text = str(err.value)
    assert message in text
    assert text.startswith("Training config preset 'paper' with overrides:") and text.endswith("run again.")


def test_unknown_preset_missing_file_bad_toml_and_bad_override_are_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown training preset 'fast'; choose one of .*paper"):
        load_train_config("fast")
    with pytest.raises(ConfigError, match=r"does not exist; check the path\.$"):
        load_train_config("paper", path=tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML .*; fix the syntax\.$"):
        load_train_config("paper", path=bad)
    with pytest.raises(ConfigError, match=r"The override 'epochs' is not KEY=VALUE; write e.g. --set epochs=10\."):
        load_train_config("paper", overrides=["epochs"])


def test_cli_check_config_prints_the_config_or_fails_before_any_work():
    from click.testing import CliRunner

    from trainer.cli import cli

    ok = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--set", "epochs=5", "--check-config"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["epochs"] == 5
    bad = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--set", "width=-1"])
    assert bad.exit_code != 0
    assert "field 'width' is invalid (Input should be greater than 0" in bad.output
    assert "Traceback" not in bad.output


def test_pipeline_and_epoch_end_defaults_and_workers_sized_to_the_cores():
    import os

    cfg = load_train_config("paper")
    assert cfg.data.workers == "auto" and cfg.data.preload == "auto"
    assert cfg.data.worker_threads() == len(os.sched_getaffinity(0))  # the cores this process may use
    assert (cfg.validate_every, cfg.checkpoint_every) == (1, 1)  # the paper validates every epoch
    fixed = load_train_config("paper", overrides=["data.workers=3", "validate_every=5", "checkpoint_every=10"])
    assert fixed.data.worker_threads() == 3 and (fixed.validate_every, fixed.checkpoint_every) == (5, 10)
    assert load_train_config("tiny").data.worker_threads() == 0  # tests: batches made in the training loop

"""The model card schema (device/model/card.py) and how the unit reports a bad card (device/model/bundle.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from device.errors import ModelError
from device.model.bundle import default_model_dir, read_card
from device.model.card import ModelCard
from device.notice import INTENDED_USE


def card_dict(fmt: str = "int8", size: int = 64) -> dict:
    """A complete, valid card as JSON data (what trainer export writes)."""
    quant = {"scale": 0.02, "zero_point": -5} if fmt == "int8" else None
    dtype = "int8" if fmt == "int8" else "float32"
    cells = size // 16
    return {
        "id": f"tiny-{fmt}", "format": fmt, "sha256": "ab" * 32,
        "input": {"size": size, "shape": [1, size, size, 3], "dtype": dtype, "normalisation": "per_image",
                  "quantisation": quant},
        "outputs": [{"name": "probs", "shape": [1, 2], "dtype": dtype, "quantisation": quant},
                    {"name": "cam", "shape": [1, cells, cells], "dtype": dtype, "quantisation": quant}],
        "cam_class": 1, "decision_threshold": 0.42,
        "threshold": {"method": "youden_j", "split": "val", "sensitivity": 0.8, "specificity": 0.7, "n_images": 360},
        "region_threshold": 0.65,
        "training_data": {"dataset": "eyepacs_256", "image_size": size, "n_train": 1440, "n_validation": 360,
                          "licence": "non-commercial research use"},
        "metrics": {"val_auc": 0.81}, "parity": {"auc_diff": 0.002, "passed": True},
        "selftest": {"sha256": "cd" * 32, "n_images": 3, "prob_atol": 0.05, "cam_min_corr": 0.9},
        "code_version": "abc123", "created": "2026-11-26T16:00:00Z", "source": "run improved (best weights)",
        "licence": "research use only",
    }


def write(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(data))
    return folder


def test_valid_card_round_trips_and_carries_the_notice():
    card = ModelCard.model_validate(card_dict())
    again = ModelCard.model_validate_json(card.model_dump_json())
    assert again == card
    assert card.cam_size == 4 and card.output("cam").shape == (1, 4, 4)
    assert card.intended_use == INTENDED_USE and "not a medical device" in card.intended_use


@pytest.mark.parametrize("path, value, message", [
    (("extra_key",), 1, "Extra inputs are not permitted"),
    (("input", "size"), 60, "multiple of 16"),
    (("input", "quantisation"), None, "quantisation must be given"),
    (("outputs",), [{"name": "probs", "shape": [1, 2], "dtype": "float32"}], "outputs must name"),
    (("decision_threshold",), 1.5, "less than 1"),
    (("sha256",), "not-a-hash", "pattern"),
])
def test_schema_rejects_bad_cards(path, value, message):
    data = card_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(data)


def test_cam_shape_must_follow_the_input_size():
    data = card_dict()
    data["outputs"][1]["shape"] = [1, 8, 8]
    with pytest.raises(ValidationError, match=r"output 'cam' must have shape \(1, 4, 4\)"):
        ModelCard.model_validate(data)


def test_missing_field_is_reported_by_name(tmp_path):
    data = card_dict()
    del data["decision_threshold"]
    with pytest.raises(ModelError) as err:
        read_card(write(tmp_path / "b", data))
    text = str(err.value)
    assert "field 'decision_threshold' is missing" in text and "re-export" in text
    assert text.count(". ") == 0  # one sentence


def test_nested_invalid_field_is_reported_with_its_path(tmp_path):
    data = card_dict()
    data["training_data"]["n_train"] = -1
    with pytest.raises(ModelError, match=r"field 'training_data\.n_train' is invalid"):
        read_card(write(tmp_path / "b", data))


def test_missing_and_garbled_cards(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"model card .*model\.json is missing"):
        read_card(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"is not valid JSON \(line 1\)"):
        read_card(tmp_path / "bad")


def test_default_model_dir(tmp_path):
    with pytest.raises(ModelError, match=r"No default model is designated"):
        default_model_dir(tmp_path)
    (tmp_path / "DEFAULT").write_text("gone-int8\n")
    with pytest.raises(ModelError, match=r"'gone-int8' named in .* is not in"):
        default_model_dir(tmp_path)
    (tmp_path / "DEFAULT").write_text("../etc\n")
    with pytest.raises(ModelError, match=r"must hold one bundle id"):
        default_model_dir(tmp_path)
    (tmp_path / "m-int8").mkdir()
    (tmp_path / "DEFAULT").write_text("m-int8\n")
    assert default_model_dir(tmp_path) == tmp_path / "m-int8"

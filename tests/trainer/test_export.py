"""Round trips: a tiny CAM network -> trainer export -> models/<id>/ -> device.model.bundle, compared with Keras.

The tiny network is the real one at width 1/16 and 64 px (tests/helpers.py::tiny_cam_model); held-out and
calibration images are synthetic. Every bundle is reloaded through the unit's own loader and runtime.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from device.errors import ModelError
from device.model import Prediction
from device.model.bundle import default_model_dir, load_bundle
from tests.helpers import tiny_cam_model

pytestmark = pytest.mark.slow  # one module-wide export of both formats (~30-60 s on the shared CPU)
FAST = dict(calibration_images=24, held_out_images=40, selftest_images=2)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from trainer.export.bundle import ExportOptions, export_bundle, set_default_model

    model, _ = tiny_cam_model()
    root = tmp_path_factory.mktemp("models")
    results = {fmt: export_bundle(model, ExportOptions(format=fmt, model_id=f"tiny-{fmt}", out_root=root, **FAST))
               for fmt in ("float16", "int8")}
    set_default_model(root, "tiny-int8")
    return model, root, results


def copy_bundle(exported, fmt, tmp_path):
    return shutil.copytree(exported[1] / f"tiny-{fmt}", tmp_path / f"tiny-{fmt}")


@pytest.mark.parametrize("fmt", ["float16", "int8"])
def test_round_trip_matches_keras(exported, fmt):
    from trainer.export.parity import AUC_DIFF_MAX, CAM_CORR_MEDIAN_MIN
    from trainer.export.representative import synthetic_images

    model, root, results = exported
    report = results[fmt].report
    assert report["passed"], report["failures"]
    assert report["auc_diff"] <= AUC_DIFF_MAX and report["cam_corr_median"] >= CAM_CORR_MEDIAN_MIN
    assert report["prob_max_abs_diff"] < (5e-3 if fmt == "float16" else 0.1)
    bundle = load_bundle(root / f"tiny-{fmt}")
    assert bundle.card.format == fmt and bundle.card.input.size == 64
    assert bundle.card.representative_data is None if fmt == "float16" else \
        bundle.card.representative_data.source == "synthetic"
    assert bundle.card.threshold.split == "synthetic" and 0 < bundle.card.decision_threshold < 1
    # fresh images, not the export's held-out set: the unit's predictions track Keras
    images = synthetic_images(6, 64, seed=777).images
    keras_out = model.predict(images, verbose=0)
    for image, probs, cam in zip(images, keras_out["probs"], keras_out["cam"]):
        pred = bundle.predict(image)
        assert isinstance(pred, Prediction) and pred.cam.shape == (4, 4)
        assert abs(pred.prob_referable - probs[1]) < (5e-3 if fmt == "float16" else 0.1)
        assert np.corrcoef(pred.cam.ravel(), cam.ravel())[0, 1] > 0.95
    for name in ("parity_report.json", "parity_report.md", "parity_report.png", "selftest.npz"):
        assert (root / f"tiny-{fmt}" / name).is_file()
    assert json.loads((root / f"tiny-{fmt}" / "parity_report.json").read_text())["format"] == fmt


def test_default_designation_loads(exported):
    root = exported[1]
    assert default_model_dir(root) == root / "tiny-int8"
    assert load_bundle(default_model_dir(root)).card.id == "tiny-int8"


def test_one_changed_byte_is_refused(exported, tmp_path):
    folder = copy_bundle(exported, "int8", tmp_path)
    data = bytearray((folder / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        load_bundle(folder)
    assert str(err.value).startswith(f"The model file {folder / 'model.tflite'} does not match the sha256 in its card")
    assert "restore the bundle or re-export it" in str(err.value)


def test_card_with_a_missing_field_is_refused(exported, tmp_path):
    folder = copy_bundle(exported, "float16", tmp_path)
    card = json.loads((folder / "model.json").read_text())
    del card["sha256"]
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"model card .*model\.json: field 'sha256' is missing; re-export"):
        load_bundle(folder)


def test_rehashed_foreign_model_fails_the_selftest(exported, tmp_path):
    """A model swapped in with a matching hash (e.g. the wrong format copied over) is caught by the self-test."""
    from device.atomic import sha256_file
    from trainer.export.convert import convert_to_tflite
    from trainer.model import build_cam_model

    folder = copy_bundle(exported, "float16", tmp_path)
    other = build_cam_model(64, width=1 / 16)  # same tensors, other weights: P ~ 0.5 for every image
    (folder / "model.tflite").write_bytes(convert_to_tflite(other, "float16"))
    card = json.loads((folder / "model.json").read_text())
    card["sha256"] = sha256_file(folder / "model.tflite")
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"self-test failed on this machine .*do not screen with it"):
        load_bundle(folder)
    assert load_bundle(folder, run_selftest=False).card.id == "tiny-float16"


def test_altered_selftest_file_is_refused(exported, tmp_path):
    folder = copy_bundle(exported, "int8", tmp_path)
    with np.load(folder / "selftest.npz") as data:
        arrays = dict(data)
    arrays["probs"] = arrays["probs"][:, ::-1].copy()
    np.savez_compressed(folder / "selftest.npz", **arrays)
    with pytest.raises(ModelError, match=r"self-test file .* does not match the sha256 in its card"):
        load_bundle(folder)


def test_parity_failure_writes_the_report_and_refuses(exported, tmp_path, monkeypatch):
    import trainer.export.parity
    from trainer.export.bundle import ExportOptions, export_bundle
    from trainer.export.convert import ExportError

    monkeypatch.setattr(trainer.export.parity, "CAM_CORR_MEDIAN_MIN", 1.01)  # no model can meet it
    options = ExportOptions(format="float16", model_id="strict", out_root=tmp_path,
                            **{**FAST, "held_out_images": 8, "selftest_images": 1})
    with pytest.raises(ExportError, match=r"misses the parity tolerances \(median CAM correlation is .* \(limit "
                                          r"1\.01\)\); see .*strict\.rejected.*parity_report\.md.*--force"):
        export_bundle(exported[0], options)
    report = json.loads((tmp_path / "strict.rejected" / "parity_report.json").read_text())
    assert report["passed"] is False and not (tmp_path / "strict").exists()
    assert "FAILED" in (tmp_path / "strict.rejected" / "parity_report.md").read_text()
    forced = export_bundle(exported[0], options.model_copy(update={"force": True}))
    assert forced.report["forced"] and load_bundle(forced.folder).card.parity["passed"] is False
    assert not (tmp_path / "strict.rejected").exists()


def test_flex_op_is_refused_with_the_op_name():
    import keras
    import tensorflow as tf

    from trainer.export.convert import ExportError, convert_to_tflite

    image = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Lambda(lambda t: tf.math.erfinv(tf.tanh(t) * 0.5))(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(image, {"probs": keras.layers.Dense(2, activation="softmax")(x),
                                "cam": keras.layers.Lambda(lambda t: t[..., 0, 0:1, 0])(image)})
    with pytest.raises(ExportError, match=r"TensorFlow ops with no TFLite builtin kernel \(Erfinv\).*Flex"):
        convert_to_tflite(model, "float16")


def test_cli_exports_a_keras_file_and_sets_the_default(exported, tmp_path):
    from click.testing import CliRunner

    from trainer.cli import cli

    path = tmp_path / "tiny.keras"
    exported[0].save(path)
    out = tmp_path / "models"
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"auc": 0.8, "test": {"auc": 0.7, "n_images": 61}, "froc_curve": [0.1, 0.2]}))
    result = CliRunner().invoke(cli, ["export", str(path), "--format", "float16", "--id", "cli", "--out", str(out),
                                      "--data", "synthetic", "--held-out-images", "8", "--set-default",
                                      "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    assert f"{out / 'cli-float16'}: threshold" in result.output and "parity passed" in result.output
    assert (out / "DEFAULT").read_text().strip() == "cli-float16"
    bundle = load_bundle(default_model_dir(out))
    assert bundle.card.source == "tiny.keras" and bundle.card.threshold.n_images == 8
    assert bundle.card.metrics["evaluation.auc"] == 0.8 and bundle.card.metrics["evaluation.test.n_images"] == 61
    assert not any("froc_curve" in key for key in bundle.card.metrics)
    missing = CliRunner().invoke(cli, ["export", str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_an_unsafe_bundle_id_is_refused_before_anything_is_converted(tmp_path):
    # issue 16 item 11: `trainer export --id '../../x'` gave a traceback; the id becomes a folder name under --out
    from click.testing import CliRunner

    from trainer.cli import cli

    source = tmp_path / "model.keras"
    source.write_bytes(b"not even a Keras file: the id is checked first")
    out = tmp_path / "deep" / "models"
    result = CliRunner().invoke(cli, ["export", str(source), "--id", "../../x", "--out", str(out)])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "'../../x' is not a bundle id: use 1-80 letters, digits" in result.output
    assert not (tmp_path / "deep").exists()

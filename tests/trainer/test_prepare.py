"""``trainer prepare`` and the training cache on a synthetic Kaggle folder with deliberately corrupt files."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from device.imageio import load_image
from device.preprocess import preprocess
from trainer.cli import cli
from trainer.data.cache import MANIFEST, CacheError, TrainingCache, decode_entry, encode_entry
from trainer.data.eyepacs import DatasetError
from trainer.data.prepare import PrepareConfig, prepare
from trainer.synthetic.writers import write_kaggle_folder

SIZE = 128  # cache size for the fast tests; the code path is the same as at 512
CORRUPT = {  # image id -> (error class, words of its one-sentence reason)
    "900_left": ("ImageReadError", "is a truncated JPEG"),
    "900_right": ("ImageReadError", "is empty (0 bytes)"),
    "901_left": ("ImageReadError", "is not a readable image"),
    "901_right": ("BlankImageError", "almost completely black"),
}


def _kaggle_folder(root: Path, n_patients: int, corrupt: bool) -> list[tuple[str, int]]:
    """Synthetic Kaggle folder; with ``corrupt`` also the four broken files, a label without file, a file without
    label."""
    rows = write_kaggle_folder(root, n_patients, size=240, seed=7)
    if corrupt:
        train = root / "train"
        good = (train / f"{rows[0][0]}.jpeg").read_bytes()
        (train / "900_left.jpeg").write_bytes(good[: len(good) // 2])
        (train / "900_right.jpeg").write_bytes(b"")
        (train / "901_left.jpeg").write_text("this is a text file, not a photograph\n")
        (train / "901_right.jpeg").write_bytes(cv2.imencode(".jpg", np.zeros((240, 320, 3), np.uint8))[1].tobytes())
        (train / "960_left.jpeg").write_bytes(good)  # no label row: left out
        with open(root / "trainLabels.csv", "a") as handle:
            handle.write("900_left,2\n900_right,2\n901_left,0\n901_right,0\n950_left,3\n")  # 950_left: no file
    return rows


@pytest.fixture(scope="module")
def corrupt_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    root = tmp_path_factory.mktemp("kaggle")
    return root, _kaggle_folder(root, 6, corrupt=True)


def _config(source: Path, out: Path, **kwargs) -> PrepareConfig:
    return PrepareConfig(source=source, out=out, size=kwargs.pop("size", SIZE), workers=1, progress=False, **kwargs)


def _last_run(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())["last_run"]


def test_prepare_caches_good_images_and_reports_corrupt_ones(corrupt_source, tmp_path: Path) -> None:
    source, rows = corrupt_source
    summary = prepare(_config(source, tmp_path / "cache"))

    assert summary["images"] == len(rows) == 12 and summary["size"] == SIZE
    assert {s["image_id"]: s["reason"] for s in summary["skipped_images"]}.keys() == CORRUPT.keys()
    for item in summary["skipped_images"]:
        assert CORRUPT[item["image_id"]][1] in item["reason"] and item["reason"].endswith(".")
    with open(tmp_path / "cache" / "skipped.csv") as handle:
        reported = {r["image_id"]: r["error"] for r in csv.DictReader(handle)}
    assert reported == {k: v[0] for k, v in CORRUPT.items()}
    assert (summary["labels_without_image"], summary["images_without_label"]) == (1, 1)
    assert summary["preprocess_version"] and summary["source_verified"] is True
    json.dumps(summary)  # JSON-able, for run folders and model cards

    cache = TrainingCache.open(tmp_path / "cache")
    levels = dict(rows)
    for record in cache.records():
        assert record.level == levels[record.image_id] and record.label == int(record.level >= 2)
    splits_of = {}
    for record in cache.records():
        splits_of.setdefault(record.patient, set()).add(record.split)
    assert all(len(s) == 1 for s in splits_of.values())  # both eyes in one split
    assert {r.split for r in cache.records()} == {"train", "val"}

    # The cache holds exactly what the shared preprocessing makes of each photograph.
    image_id = rows[3][0]
    rgb, mask = cache.read(image_id)
    expected = preprocess(load_image(source / "train" / f"{image_id}.jpeg"), size=SIZE)
    assert rgb.dtype == np.uint8 and rgb.shape == (SIZE, SIZE, 3) and mask.dtype == bool and mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(rgb, expected.rgb)
    np.testing.assert_array_equal(mask, expected.fov_mask)
    ids = [r.image_id for r in cache.records("train")]
    batch, masks = cache.read_many(ids, workers=2)
    assert batch.shape == (len(ids), SIZE, SIZE, 3) and masks.shape == (len(ids), SIZE, SIZE)
    np.testing.assert_array_equal(batch[1], cache.read(ids[1])[0])
    np.testing.assert_array_equal(cache.read_many(ids)[1], masks)


def test_rerun_skips_finished_images_and_redoes_changed_ones(tmp_path: Path) -> None:
    source, out = tmp_path / "src", tmp_path / "cache"
    rows = _kaggle_folder(source, 3, corrupt=False)
    prepare(_config(source, out))
    first_id, other_id = rows[0][0], rows[2][0]
    cached = TrainingCache.open(out)._files[first_id]
    before = cached.stat().st_mtime_ns

    prepare(_config(source, out))
    assert _last_run(out)["processed"] == 0 and cached.stat().st_mtime_ns == before

    photo = source / "train" / f"{first_id}.jpeg"
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))  # touched, same bytes
    TrainingCache.open(out)  # the SHA-256 confirms the content is unchanged
    prepare(_config(source, out))
    assert _last_run(out)["processed"] == 1 and cached.stat().st_mtime_ns == before  # re-hashed, not redone

    shutil.copyfile(source / "train" / f"{other_id}.jpeg", photo)  # the content really changed
    with pytest.raises(CacheError, match=r"is stale: 1 source file\(s\) changed .*re-run `python -m trainer prepare`"):
        TrainingCache.open(out)
    prepare(_config(source, out))
    np.testing.assert_array_equal(TrainingCache.open(out).read(first_id)[0], TrainingCache.open(out).read(other_id)[0])

    (source / "trainLabels.csv").write_text("image,level\n" + "".join(f"{i},4\n" for i, _ in rows))
    with pytest.raises(CacheError, match=r"is stale"):
        TrainingCache.open(out)
    prepare(_config(source, out))  # new labels: manifest rebuilt without re-preprocessing
    assert _last_run(out)["processed"] == 0 and {r.level for r in TrainingCache.open(out).records()} == {4}


def test_new_preprocessing_version_or_size_rebuilds_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, out = tmp_path / "src", tmp_path / "cache"
    rows = _kaggle_folder(source, 2, corrupt=False)
    prepare(_config(source, out))
    import device.preprocess

    monkeypatch.setattr(device.preprocess, "PREPROCESS_VERSION", "test-next")
    with pytest.raises(CacheError,
                       match=r"was made with preprocessing version 1\+\w{12} but the code is at test-next\+"):
        TrainingCache.open(out)
    assert prepare(_config(source, out))["preprocess_version"].startswith("test-next+")
    assert _last_run(out)["processed"] == len(rows)

    prepare(_config(source, out, size=64))
    assert _last_run(out)["processed"] == len(rows) and TrainingCache.open(out).read(rows[0][0])[0].shape == (64, 64, 3)


def test_preprocessing_version_follows_the_code_not_only_the_constant(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.data import cache as cache_module

    version = cache_module.preprocess_version()
    assert {"device.preprocess", "device.fov", "device.imageio"} <= cache_module._device_imports("device.preprocess")
    real_path = cache_module._module_path
    edited_fov = tmp_path / "fov.py"  # device/fov.py edited without bumping PREPROCESS_VERSION
    edited_fov.write_bytes(real_path("device.fov").read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(cache_module, "_module_path",
                        lambda name: edited_fov if name == "device.fov" else real_path(name))
    changed = cache_module.preprocess_version()
    assert changed != version and changed.split("+")[0] == version.split("+")[0]


def test_cache_errors_say_what_to_do(corrupt_source, tmp_path: Path) -> None:
    source, rows = corrupt_source
    with pytest.raises(CacheError,
                       match=r"There is no training cache in .*; create it with `python -m trainer prepare"):
        TrainingCache.open(tmp_path / "none")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"is not empty and is not a training cache; choose an empty or new folder"):
        prepare(_config(source, tmp_path / "other"))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"

    out = tmp_path / "cache"
    prepare(_config(source, out, limit=2))
    (out / MANIFEST).unlink()
    with pytest.raises(CacheError, match=r"is incomplete \(prepare did not finish\); re-run"):
        TrainingCache.open(out)
    prepare(_config(source, out, limit=2))
    cache = TrainingCache.open(out)
    image_id = cache.records()[0].image_id
    cache._files[image_id].write_bytes(cache._files[image_id].read_bytes()[:-100])
    with pytest.raises(CacheError, match=f"The cache file of {image_id} is damaged; delete it and re-run"):
        cache.read(image_id)
    with pytest.raises(CacheError, match=r"The image 1_left is not in the training cache"):
        cache.read("1_left")
    with pytest.raises(CacheError, match=r"There is no split called 'dev'; use train, val or test"):
        cache.records("dev")


def test_codec_round_trip_is_lossless() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 37, 3), dtype=np.uint8)  # odd size: the packed mask has padding bits
    mask = rng.random((37, 37)) > 0.5
    back_rgb, back_mask = decode_entry(encode_entry(rgb, mask))
    np.testing.assert_array_equal(back_rgb, rgb)
    np.testing.assert_array_equal(back_mask, mask)


def test_cli_prepare_prints_the_summary_and_errors_in_one_line(corrupt_source, tmp_path: Path) -> None:
    source, _ = corrupt_source
    result = CliRunner().invoke(cli, ["prepare", str(source), "--out", str(tmp_path / "c"), "--size", str(SIZE),
                                      "--workers", "1", "--limit", "4", "--val-fraction", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "4 images at 128 px" in result.output and "train" in result.output and "val" in result.output
    assert TrainingCache.open(tmp_path / "c").summary()["val_fraction"] == 0.5

    result = CliRunner().invoke(cli, ["prepare", str(tmp_path / "absent"), "--out", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "does not exist; check the path and try again." in result.output and "Traceback" not in result.output


def test_one_prepare_at_a_time_and_copied_caches_open_with_a_warning(tmp_path: Path) -> None:
    import fcntl

    source, out = tmp_path / "src", tmp_path / "cache"
    _kaggle_folder(source, 1, corrupt=False)
    out.mkdir()
    with open(out / ".prepare.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running prepare would
        with pytest.raises(DatasetError, match=r"Another prepare is writing to .*; wait for it to finish"):
            prepare(_config(source, out))
    prepare(_config(source, out))

    source.rename(tmp_path / "moved")  # e.g. the cache was copied to a GPU server without the photographs
    with pytest.warns(UserWarning, match="is absent, so its images were not checked"):
        cache = TrainingCache.open(out)
    assert cache.summary()["source_verified"] is False and len(cache.records()) == 2
    with pytest.raises(CacheError, match=r"is stale: 3 source file\(s\) changed or disappeared"):
        TrainingCache.open(out, verify_source=True)
    assert len(TrainingCache.open(out, verify_source=False).records()) == 2

"""Synthetic fundus generator and its Kaggle / DiaretDB1 writers (fast: small images, no real data)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from trainer.cli import cli
from trainer.synthetic import (
    LESION_TYPES,
    Lesion,
    generate_fundus,
    grade_from_lesions,
    write_diaretdb1_folder,
    write_kaggle_folder,
)
from trainer.synthetic.experts import fuse_expert_map

ALL_LESIONS = {"haemorrhages": 8, "hard_exudates": 3, "soft_exudates": 4, "red_small_dots": 12}


def _component_extents(mask: np.ndarray) -> np.ndarray:
    """Largest bounding-box side (px) of each 8-connected component."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])


def test_same_seed_same_photograph_and_masks():
    a, b = generate_fundus(7, size=256), generate_fundus(7, size=256)
    assert np.array_equal(a.image, b.image)
    assert all(np.array_equal(a.masks[t], b.masks[t]) for t in LESION_TYPES)
    assert a.grade == b.grade and a.fov == b.fov
    assert not np.array_equal(a.image, generate_fundus(8, size=256).image)


def test_types_shapes_and_canonical_names():
    f = generate_fundus(1, width=300, height=200, lesions=ALL_LESIONS)
    assert LESION_TYPES == ("haemorrhages", "hard_exudates", "soft_exudates", "red_small_dots")
    assert f.image.dtype == np.uint8 and f.image.shape == (200, 300, 3)
    assert f.fov_mask.dtype == bool and f.fov_mask.shape == (200, 300)
    assert set(f.masks) == set(LESION_TYPES)
    assert all(m.dtype == bool and m.shape == (200, 300) and m.any() for m in f.masks.values())


def test_no_lesions_gives_empty_masks_and_grade_0():
    f = generate_fundus(3, size=256, lesions=False)
    assert f.grade == 0 and not f.referable and f.lesions == []
    assert all(not m.any() for m in f.masks.values())


@pytest.mark.parametrize("seed", range(6))
def test_masks_and_lesions_lie_inside_the_fov(seed):
    f = generate_fundus(seed, size=320, lesions=ALL_LESIONS)
    for t in LESION_TYPES:
        assert not (f.masks[t] & ~f.fov_mask).any(), t
    cx, cy, r = f.fov
    for lesion in f.lesions:
        assert np.hypot(lesion.x - cx, lesion.y - cy) + lesion.diameter / 2 <= r


def test_fov_matches_its_geometry_and_background_is_dark_but_not_zero():
    f = generate_fundus(11, size=512)
    cx, cy, r = f.fov
    yy, xx = np.mgrid[:512, :512]
    assert np.array_equal(f.fov_mask, np.hypot(xx - cx, yy - cy) <= r)
    outside = f.image[np.hypot(xx - cx, yy - cy) > r + 1]  # beyond the anti-aliased rim
    assert 1.0 < outside.mean() < 15.0  # near-black, noisy, not exactly 0
    assert outside.std() > 0.3 and outside.max() < 40
    assert f.image[f.fov_mask].mean() > 3 * outside.mean()


def test_wide_frame_can_clip_the_circle_top_and_bottom():
    f = generate_fundus(5, width=640, height=480, clipped=True, lesions=ALL_LESIONS)
    assert f.fov[2] > 240  # radius larger than half the height
    assert f.fov_mask[0].any() and f.fov_mask[-1].any()  # FOV touches top and bottom rows
    assert not f.fov_mask[:, 0].any() and not f.fov_mask[:, -1].any()  # but not the sides
    unclipped = generate_fundus(5, width=640, height=480, clipped=False)
    assert unclipped.fov[2] < 240 and not unclipped.fov_mask[0].any()


def test_lesion_sizes_are_realistic_at_512():
    extents = {t: [] for t in LESION_TYPES}
    for seed in range(4):
        f = generate_fundus(seed, size=512, lesions=ALL_LESIONS)
        for t in LESION_TYPES:
            extents[t].extend(_component_extents(f.masks[t]))
    assert min(extents["red_small_dots"]) >= 1 and max(extents["red_small_dots"]) <= 3
    assert min(extents["haemorrhages"]) >= 2 and max(extents["haemorrhages"]) <= 26
    assert max(extents["haemorrhages"]) >= 12  # blotches, not only dots
    assert min(extents["soft_exudates"]) >= 5 and max(extents["soft_exudates"]) <= 31
    assert max(extents["hard_exudates"]) <= 60  # small dots, merged at most into a cluster
    assert np.median(extents["hard_exudates"]) <= 8


def test_hard_exudates_come_in_clusters():
    f = generate_fundus(2, size=512, lesions={"hard_exudates": 2})
    clusters = [lesion for lesion in f.lesions if lesion.lesion_type == "hard_exudates"]
    assert len(clusters) == 2
    n_dots, labels = cv2.connectedComponents(f.masks["hard_exudates"].astype(np.uint8), connectivity=8)
    assert n_dots - 1 >= 3  # several dots for two clusters
    ys, xs = np.nonzero(f.masks["hard_exudates"])
    dist = np.min([np.hypot(xs - c.x, ys - c.y) - c.diameter / 2 for c in clusters], axis=0)
    assert dist.max() <= 1.5  # every exudate pixel lies within one of the clusters


def test_lesion_sizes_scale_with_the_photograph():
    small = generate_fundus(4, size=512, lesions={"soft_exudates": 5})
    large = generate_fundus(4, size=1024, lesions={"soft_exudates": 5})
    ratio = large.masks["soft_exudates"].sum() / small.masks["soft_exudates"].sum()
    assert 2.5 < ratio < 6.0  # area grows ~4x when the photograph doubles


@pytest.mark.parametrize("grade", range(5))
def test_requested_grade_is_reached_and_consistent_with_lesions(grade):
    for seed in range(3):
        f = generate_fundus(seed, size=256, grade=grade)
        assert f.grade == grade == grade_from_lesions(f.lesions, f.fov)
        assert f.referable == (grade >= 2)
        present = {t for t in LESION_TYPES if f.masks[t].any()}
        assert present == {lesion.lesion_type for lesion in f.lesions}
        if grade == 0:
            assert not present
        if grade == 1:
            assert present == {"red_small_dots"}
        if grade >= 2:
            assert present & {"haemorrhages", "hard_exudates", "soft_exudates"}


def test_grade_rule():
    fov = (100.0, 100.0, 90.0)
    assert grade_from_lesions([], fov) == 0
    assert grade_from_lesions([Lesion("red_small_dots", 50, 50, 2)], fov) == 1
    assert grade_from_lesions([Lesion("hard_exudates", 50, 50, 20)], fov) == 2
    one_quadrant = [Lesion("haemorrhages", 120 + i, 120, 5) for i in range(12)]
    assert grade_from_lesions(one_quadrant, fov) == 2  # many, but not spread over 4 quadrants
    spread = [Lesion("haemorrhages", 100 + (30 if i % 2 else -30), 100 + (30 if i % 4 < 2 else -30), 5)
              for i in range(12)]
    assert grade_from_lesions(spread, fov) == 3
    assert grade_from_lesions(spread + [Lesion("soft_exudates", 60, 60, 15)] * 3, fov) == 4


def test_unknown_lesion_type_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match=r"unknown lesion types \['microaneurysms'\]; use"):
        generate_fundus(0, size=128, lesions={"microaneurysms": 3})


def test_fused_expert_map_encoding():
    rng = np.random.default_rng(0)
    f = generate_fundus(9, size=512, lesions=ALL_LESIONS)
    for t in LESION_TYPES:
        fused = fuse_expert_map(rng, f.masks[t], f.fov_mask, f.fov[2] / 235)
        assert fused.dtype == np.uint8 and set(np.unique(fused)) <= set(range(0, 253, 21))
        assert np.array_equal(fused >= 189, f.masks[t])  # 75 % confidence = exactly the lesions
        assert ((fused > 0) & (fused < 189)).any()  # fuzzy outlines below 75 %
        assert not (fused[~f.fov_mask]).any()


def test_kaggle_folder_layout(tmp_path: Path):
    rows = write_kaggle_folder(tmp_path, n_patients=3, size=160, seed=2)
    with open(tmp_path / "trainLabels.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["image"], int(r["level"])) for r in table] == rows and len(rows) == 6
    patients = {name.split("_")[0] for name, _ in rows}
    assert len(patients) == 3
    for p in patients:
        assert {f"{p}_left", f"{p}_right"} <= {name for name, _ in rows}
    for name, level in rows:
        image = cv2.imread(str(tmp_path / "train" / f"{name}.jpeg"))
        assert image is not None and image.shape[0] == 160 and 0 <= level <= 4
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == sorted(f"{n}.jpeg" for n, _ in rows)
    again = write_kaggle_folder(tmp_path / "again", n_patients=3, size=160, seed=2)
    assert again == rows


def test_diaretdb1_folder_layout(tmp_path: Path):
    ids = write_diaretdb1_folder(tmp_path, n_images=6, width=300, height=230, seed=1)
    assert ids == [f"image{i:03d}" for i in range(1, 7)]
    res = tmp_path / "diaretdb1_v_1_1" / "resources"
    fmask = np.array(Image.open(res / "images/ddb1_fundusmask/fmask.tif"))
    assert fmask.dtype == bool and fmask.shape == (230, 300) and 0.7 < fmask.mean() < 0.9
    train = (res / "traindatasets/trainset.txt").read_text().split()
    test = (res / "testdatasets/testset.txt").read_text().split()
    assert sorted(train + test) == [f"{i}.png" for i in ids] and len(train) == 2
    strong = weak = 0
    for image_id in ids:
        image = cv2.imread(str(res / f"images/ddb1_fundusimages/{image_id}.png"))
        assert image.shape == (230, 300, 3)
        assert image[~fmask].mean() < 15 < image[fmask].mean()  # every image shares this one FOV
        for folder in ("hardexudates", "softexudates", "hemorrhages", "redsmalldots"):
            fused = cv2.imread(str(res / f"images/ddb1_groundtruth/{folder}/{image_id}.png"), cv2.IMREAD_UNCHANGED)
            assert fused.shape == (230, 300) and fused.dtype == np.uint8
            assert set(np.unique(fused)) <= set(range(0, 253, 21)) and not fused[~fmask].any()
            strong += int((fused >= 189).any())
            weak += int(((fused > 0) & (fused < 189)).any())
    assert strong > 0 and weak > 0


def test_cli_writes_both_layouts_and_explains_missing_output(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", "--kaggle", str(tmp_path / "k"), "--diaretdb1", str(tmp_path / "d"),
                                 "-n", "2", "--size", "128"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "k" / "train").glob("*.jpeg"))) == 4
    assert len(list((tmp_path / "d").rglob("ddb1_fundusimages/*.png"))) == 2
    result = runner.invoke(cli, ["synth"])
    assert result.exit_code != 0 and "Give --kaggle OUT and/or --diaretdb1 OUT" in result.output

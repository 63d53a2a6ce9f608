"""DiaretDB1 reader and v2.1 XML rasterisation: synthetic folders (fast) and the real database (real_data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from trainer.data.diaretdb1 import CONFIDENCE_75, LESION_TYPES, DiaretDB1, load_diaretdb1
from trainer.data.diaretdb1_xml import Marking, expert_level_maps, marking_mask, parse_expert_xml, rebuild_fused_maps
from trainer.data.eyepacs import DatasetError
from trainer.synthetic import synthetic_diaretdb1_fundus, write_diaretdb1_folder

W, H = 300, 230


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddb1")
    write_diaretdb1_folder(root, n_images=8, width=W, height=H, seed=5)
    return root


# ---------------------------------------------------------------- synthetic folder, fast


def test_synthetic_folder_loads_with_sorted_ids_split_and_fov(synthetic_root: Path):
    db = load_diaretdb1(synthetic_root)
    assert db.image_ids == [f"image{i:03d}" for i in range(1, 9)]
    assert db.train_ids == sorted(db.train_ids) and db.test_ids == sorted(db.test_ids)
    assert sorted(db.train_ids + db.test_ids) == db.image_ids and len(db.train_ids) == 3
    assert db.fov_mask.dtype == bool and db.fov_mask.shape == (H, W)
    assert np.array_equal(db.fov_mask, synthetic_diaretdb1_fundus(0, W, H, seed=5).fov_mask)
    assert db.xml_dir is None and db.threshold == 189 and CONFIDENCE_75 == 0.75
    # the v1.1 folder itself is accepted too
    assert load_diaretdb1(synthetic_root / "diaretdb1_v_1_1").image_ids == db.image_ids


def test_synthetic_masks_at_75_percent_equal_the_generator_truth(synthetic_root: Path):
    db = load_diaretdb1(synthetic_root)
    n_lesion_images = 0
    for i, image_id in enumerate(db.image_ids):
        truth = synthetic_diaretdb1_fundus(i, W, H, seed=5)
        image = db.image(image_id)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - truth.image).max() == 0  # PNG is lossless, channel order RGB
        masks = db.lesion_masks(image_id)
        for t in LESION_TYPES:
            assert np.array_equal(masks[t], truth.masks[t]), (image_id, t)
            assert db.has_lesion(image_id, t) == bool(truth.masks[t].any())
            raw = db.fused_map(image_id, t)
            assert raw.dtype == np.uint8 and raw.shape == (H, W) and raw.max() <= 252
        n_lesion_images += any(m.any() for m in masks.values())
    assert n_lesion_images >= 2


def test_lower_confidence_gives_larger_masks(synthetic_root: Path):
    strict, loose = load_diaretdb1(synthetic_root, 0.75), load_diaretdb1(synthetic_root, 0.2)
    assert loose.threshold == 51
    grew = 0
    for image_id in strict.image_ids:
        for t, m in strict.lesion_masks(image_id).items():
            wide = loose.lesion_masks(image_id)[t]
            assert not (m & ~wide).any()
            grew += int(wide.sum() > m.sum())
    assert grew > 0


def test_missing_folder_and_bad_arguments_give_one_sentence(tmp_path: Path, synthetic_root: Path):
    with pytest.raises(DatasetError, match=r"^No DiaretDB1 v1.1 tree .* was found in .*; pass the folder that holds"):
        load_diaretdb1(tmp_path)
    with pytest.raises(DatasetError, match=r"confidence threshold must be above 0 and at most 1, not 1.5"):
        load_diaretdb1(synthetic_root, confidence=1.5)
    db = load_diaretdb1(synthetic_root)
    with pytest.raises(DatasetError, match=r"DiaretDB1 has no image 'image999'; use one of db.image_ids"):
        db.image("image999")
    with pytest.raises(DatasetError, match=r"Unknown lesion type 'microaneurysms'; use one of haemorrhages"):
        db.fused_map("image001", "microaneurysms")
    with pytest.raises(DatasetError, match=r"No v2.1 expert XMLs"):
        db.rebuilt_fused_maps("image001")


def test_missing_split_list_and_fov_mask_are_reported(tmp_path: Path, synthetic_root: Path):
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    (copy / "diaretdb1_v_1_1/resources/testdatasets/testset.txt").unlink()
    with pytest.raises(DatasetError, match=r"split list .*testset.txt is missing; restore it"):
        load_diaretdb1(copy)
    (copy / "diaretdb1_v_1_1/resources/images/ddb1_fundusmask/fmask.tif").unlink()
    with pytest.raises(DatasetError, match=r"FOV mask .*fmask.tif is missing or unreadable"):
        load_diaretdb1(copy)


# ---------------------------------------------------------------- v2.1 XML parsing and rasterisation, fast

XML = """<?xml version="1.0" standalone="no"?>
<imgannotooldata><markinglist>
<marking><circleregion><centroid><coords2d>11,21</coords2d></centroid><radius direction="x">3</radius></circleregion>
<representativepoint><coords2d>11,21</coords2d></representativepoint><confidencelevel>High</confidencelevel>
<markingtype>Red_small_dots</markingtype></marking>
<marking><ellipseregion><centroid><coords2d>41,21</coords2d></centroid><radius direction="x">8</radius>
<radius direction="y">3</radius><angle>90</angle></ellipseregion><representativepoint><coords2d>41,21</coords2d>
</representativepoint><confidencelevel>Medium</confidencelevel><markingtype>Haemorrhages</markingtype></marking>
<marking><polygonregion><centroid><coords2d>15,45</coords2d></centroid><coords2d>11,41</coords2d>
<coords2d>21,41</coords2d><coords2d>21,51</coords2d><coords2d>11,51</coords2d><coords2d>11,41</coords2d>
</polygonregion><representativepoint><coords2d>15,45</coords2d></representativepoint>
<confidencelevel>Low</confidencelevel><markingtype>Hard_exudates</markingtype></marking>
<marking><circleregion><centroid><coords2d>16,46</coords2d></centroid><radius direction="x">2</radius></circleregion>
<representativepoint><coords2d>16,46</coords2d></representativepoint><confidencelevel>High</confidencelevel>
<markingtype>Hard_exudates</markingtype></marking>
<marking><circleregion><centroid><coords2d>50,50</coords2d></centroid><radius direction="x">9</radius></circleregion>
<representativepoint><coords2d>50,50</coords2d></representativepoint><confidencelevel>High</confidencelevel>
<markingtype>Disc</markingtype></marking>
</markinglist></imgannotooldata>
"""


def test_parse_expert_xml_shapes_levels_types_and_1_based_coordinates(tmp_path: Path):
    path = tmp_path / "diaretdb1_image001_01_plain.xml"
    path.write_text(XML)
    markings = parse_expert_xml(path)
    assert [m.lesion_type for m in markings] == ["red_small_dots", "haemorrhages", "hard_exudates", "hard_exudates"]
    assert [m.confidence for m in markings] == [3, 2, 1, 3]
    circle, ellipse, polygon, _ = markings
    assert circle.shape == "circle" and circle.centre == (10.0, 20.0) and circle.radii == (3.0, 3.0)
    assert ellipse.shape == "ellipse" and ellipse.radii == (8.0, 3.0) and ellipse.angle == 90.0
    assert polygon.shape == "polygon" and polygon.vertices[0] == (10.0, 40.0) and len(polygon.vertices) == 5


def test_rasterisation_rules_measured_on_the_real_maps():
    shape = (60, 60)
    circle = marking_mask(Marking("red_small_dots", 3, "circle", (30.0, 30.0), (3.0, 3.0)), shape)
    default = marking_mask(Marking("red_small_dots", 3, "circle", (30.0, 30.0), (5.0, 5.0)), shape)
    assert circle[1].sum() == 33 and default[1].sum() == 33  # radius-5 default markers are drawn with radius 3
    big = marking_mask(Marking("haemorrhages", 3, "circle", (30.0, 30.0), (20.0, 20.0)), (80, 80))
    assert big[1].sum() == 1293
    # an ellipse at 90 degrees is tall; x = column
    (rows, cols), patch = marking_mask(Marking("haemorrhages", 2, "ellipse", (30.0, 30.0), (8.0, 3.0), 90.0), shape)
    ys, xs = np.nonzero(patch)
    assert np.ptp(ys) > 2 * np.ptp(xs)
    # angles turn counter-clockwise on screen: at 45 degrees the long axis rises to the right (y down)
    (rows, cols), patch = marking_mask(Marking("haemorrhages", 2, "ellipse", (30.0, 30.0), (12.0, 3.0), 45.0), shape)
    ys, xs = np.nonzero(patch)
    assert np.corrcoef(xs, ys)[0, 1] < -0.8


def test_rebuilt_fused_map_sums_experts_and_takes_the_max_within_one(tmp_path: Path):
    for expert in (1, 2):
        (tmp_path / f"diaretdb1_image007_0{expert}_plain.xml").write_text(XML)
    for expert in (3, 4):
        empty = "<imgannotooldata><markinglist/></imgannotooldata>"
        (tmp_path / f"diaretdb1_image007_0{expert}_plain.xml").write_text(empty)
    fused = rebuild_fused_maps(tmp_path, "image007", (60, 70))
    assert fused["red_small_dots"][20, 10] == 21 * (3 + 3)  # two experts, High
    assert fused["haemorrhages"][20, 40] == 21 * (2 + 2)
    assert fused["hard_exudates"][45, 15] == 21 * (3 + 3)  # inside the High circle: max(Low, High) per expert
    assert fused["hard_exudates"][41, 11] == 21 * (1 + 1)  # polygon corner, Low only
    assert fused["soft_exudates"].max() == 0  # Disc markings are skipped
    levels = expert_level_maps(parse_expert_xml(tmp_path / "diaretdb1_image007_01_plain.xml"), (60, 70))
    assert levels["hard_exudates"].max() == 3


def test_malformed_xml_is_reported(tmp_path: Path):
    bad = tmp_path / "diaretdb1_image001_01_plain.xml"
    bad.write_text("<imgannotooldata><markinglist><marking>")
    with pytest.raises(DatasetError, match=r"annotation .* is missing or not valid XML; restore it"):
        parse_expert_xml(bad)


# ---------------------------------------------------------------- the real database (DESIGN.md §3)

# Images with ground truth at 75 % (value >= 189), per split (train, test): DESIGN.md §3 and issue 3.
EXPECTED_SPLIT = {"hard_exudates": (18, 20), "soft_exudates": (6, 9), "haemorrhages": (21, 18),
                  "red_small_dots": (19, 20)}
# DESIGN.md §3's totals 30 / 11 / 36 / 21 are what one gets with 0.75 x 255 (value >= 192, i.e. > 189); at the
# correct >= 189 the totals are the sums of the per-split counts above (38 / 15 / 39 / 39). Both are checked.
TOTALS_AT_255_SCALE = {"hard_exudates": 30, "soft_exudates": 11, "haemorrhages": 36, "red_small_dots": 21}
# Issue 3 asks for >= 0.9; the rasterisation rules of diaretdb1_xml reach 0.995-1.000 (docs/diaretdb1.md), so the
# test guards them (a plain rasterisation scores 0.93 / 0.94 / 0.95 / 0.33).
MIN_IOU = 0.99


@pytest.fixture(scope="module")
def real(request) -> tuple[DiaretDB1, dict]:
    """Load the real database once; one pass over the 89 images x 4 types (fused maps + XML rebuild)."""
    from tests.helpers import shared_data

    db = load_diaretdb1(shared_data("diaretdb1"))
    maxima: dict[tuple[str, str], int] = {}
    inter = dict.fromkeys(LESION_TYPES, 0)
    union = dict.fromkeys(LESION_TYPES, 0)
    for image_id in db.image_ids:
        rebuilt = db.rebuilt_fused_maps(image_id)
        for t in LESION_TYPES:
            fused = db.fused_map(image_id, t)
            maxima[(image_id, t)] = int(fused.max())
            mask = fused >= db.threshold
            other = rebuilt[t] >= db.threshold
            inter[t] += int((mask & other).sum())
            union[t] += int((mask | other).sum())
    iou = {t: inter[t] / union[t] for t in LESION_TYPES}
    print("pixel-pooled IoU, XML-rebuilt vs fused maps at 0.75:", {t: round(v, 4) for t, v in iou.items()})
    return db, iou, maxima


@pytest.mark.real_data
@pytest.mark.slow
def test_real_layout_split_and_fov(real):
    db, _, _ = real
    assert len(db.image_ids) == 89 and len(db.train_ids) == 28 and len(db.test_ids) == 61
    assert db.image_ids[0] == "image001" and db.image_ids[-1] == "image089"
    assert db.fov_mask.shape == (1152, 1500) and int(db.fov_mask.sum()) == 1_407_235
    image = db.image("image001")
    assert image.shape == (1152, 1500, 3)
    red, green, blue = image[db.fov_mask].mean(axis=0)
    assert red > green > blue  # RGB order: a fundus is red
    assert db.xml_dir is not None and db.xml_dir.name == "groundtruth"


@pytest.mark.real_data
@pytest.mark.slow
def test_real_images_with_ground_truth_at_75_percent(real):
    db, _, maxima = real
    for image_id in db.image_ids[:6]:  # has_lesion agrees with the maps (re-reads them: a few images only)
        assert all(db.has_lesion(image_id, t) == (maxima[(image_id, t)] >= 189) for t in LESION_TYPES)
    for t in LESION_TYPES:
        train = sum(maxima[(i, t)] >= db.threshold for i in db.train_ids)
        test = sum(maxima[(i, t)] >= db.threshold for i in db.test_ids)
        assert (train, test) == EXPECTED_SPLIT[t], t
        assert sum(maxima[(i, t)] >= 189 for i in db.image_ids) == sum(EXPECTED_SPLIT[t])
        assert sum(maxima[(i, t)] > 189 for i in db.image_ids) == TOTALS_AT_255_SCALE[t]
    healthy = [i for i in db.image_ids if all(maxima[(i, t)] < 189 for t in LESION_TYPES)]
    assert len(healthy) == 38  # DESIGN.md §2.4 default "healthy" count


@pytest.mark.real_data
@pytest.mark.slow
def test_real_xml_rebuild_agrees_with_fused_maps(real):
    _, iou, _ = real
    for t in LESION_TYPES:
        assert iou[t] >= MIN_IOU, (t, iou[t])


@pytest.mark.real_data
def test_real_xml_parsing(diaretdb1_root: Path):
    xml_dir = diaretdb1_root / "ddb1_v02_01" / "groundtruth"
    first = parse_expert_xml(xml_dir / "diaretdb1_image001_01_plain.xml")
    assert len(first) == 10  # all ten markings of expert 1 are lesions of the four types
    assert first[0] == Marking("hard_exudates", 3, "circle", (712.0, 531.0), (141.0, 141.0))
    shapes = {m.shape for m in parse_expert_xml(xml_dir / "diaretdb1_image001_03_plain.xml")}
    assert "ellipse" in shapes

"""Region proposals (device.regions): pixel-centre convention, normalisation, components, errors."""

from __future__ import annotations

import numpy as np
import pytest

from device.errors import ConfigError, ModelError
from device.preprocess import CropGeometry
from device.regions import (
    REGION_THRESHOLD,
    cam_to_original,
    normalise_cam,
    propose_regions,
    regions_from_heat,
    upsample_cam,
)


def test_upsample_follows_the_pixel_centre_convention():
    cam = np.zeros((32, 32), np.float32)
    cam[5, 9] = 1.0
    heat = upsample_cam(cam, (512, 512))
    # cell (5, 9) covers rows 80..95 and columns 144..159; its centre 16i + 7.5 lies between two pixels,
    # so the two central pixels tie for the maximum and the block is symmetric about the centre
    block = heat[80:96, 144:160]
    assert np.allclose(block, block[::-1, ::-1])
    assert heat[87, 151] == pytest.approx(heat.max()) and heat[88, 152] == pytest.approx(heat.max())
    assert heat[87, 151] == pytest.approx((1 - 1 / 32) ** 2, abs=1e-6)  # 0.5/16 from the centre in x and y
    # nothing leaks beyond one cell of the peak (bilinear support)
    assert heat[:72].max() == 0 and heat[104:].max() == 0


def test_constant_cam_upsamples_to_constant_and_shape_is_height_width():
    heat = upsample_cam(np.full((4, 6), 2.5, np.float32), (64, 96))
    assert heat.shape == (64, 96) and np.allclose(heat, 2.5)


def test_normalisation_modes():
    cam = np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32)
    assert np.allclose(normalise_cam(cam, "max"), [[0, 0], [1 / 3, 1]])
    assert np.allclose(normalise_cam(cam, "minmax"), [[0, 0.25], [0.5, 1]])
    assert np.allclose(normalise_cam(cam, "fixed", (0.0, 2.0)), [[0, 0], [0.5, 1]])
    assert not normalise_cam(np.zeros((3, 3)), "max").any()  # no NaN from 0/0
    assert not normalise_cam(np.full((3, 3), 7.0), "minmax").any()


def test_regions_have_boxes_areas_scores_and_masks():
    heat = np.zeros((40, 60), np.float32)
    heat[2:6, 3:10] = 1.0  # 4x7 = 28 px, score 1
    heat[20:30, 40:45] = 0.7  # 10x5 = 50 px, score 0.7
    heat[25, 10] = 0.5  # below 0.65
    props = regions_from_heat(heat)
    assert [(r.x, r.y, r.w, r.h, r.area) for r in props.regions] == [(3, 2, 7, 4, 28), (40, 20, 5, 10, 50)]
    assert [r.score for r in props.regions] == pytest.approx([1.0, 0.7])
    assert props.mask(props.regions[1]).sum() == 50 and props.mask(props.regions[1])[25, 42]
    assert props.union_mask().sum() == 78
    assert props.threshold == REGION_THRESHOLD


def test_connectivity_and_min_area_are_parameters():
    heat = np.zeros((10, 10), np.float32)
    heat[2, 2] = heat[3, 3] = 1.0  # diagonal neighbours
    assert len(regions_from_heat(heat, connectivity=8).regions) == 1
    assert len(regions_from_heat(heat, connectivity=4).regions) == 2
    assert len(regions_from_heat(heat, connectivity=4, min_area=2).regions) == 0
    # dropped components are cleared from the label image too
    assert not regions_from_heat(heat, connectivity=4, min_area=2).labels.any()


def test_propose_regions_normalises_per_image_and_masks():
    cam = np.zeros((8, 8), np.float32)
    cam[1, 1], cam[6, 6] = 4.0, 2.0  # 2.0 / 4.0 = 0.5 < 0.65 with per-image max
    props = propose_regions(cam)
    assert len(props.regions) == 1 and props.regions[0].score == 1.0
    assert len(propose_regions(cam, threshold=0.4).regions) == 2
    fov = np.ones((8, 8), bool)
    fov[1, 1] = False  # the brightest cell is outside the field of view: the other one becomes the maximum
    masked = propose_regions(cam, mask=fov)
    assert [(r.x, r.y) for r in masked.regions] == [(6, 6)] and masked.heat[6, 6] == 1.0
    assert propose_regions(np.zeros((8, 8))).regions == ()


def test_scores_are_the_maximum_inside_each_region_on_the_normalised_scale():
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0], cam[0, 1], cam[3, 3] = 2.0, 1.6, 1.4
    props = propose_regions(cam, normalisation="fixed", fixed_range=(0.0, 2.0))
    assert [r.score for r in props.regions] == pytest.approx([1.0, 0.7])
    assert props.heat.max() == 1.0 and props.heat[3, 3] == pytest.approx(0.7)


def test_cam_to_original_matches_upsampling_on_an_identity_geometry():
    cam = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    geometry = CropGeometry(x0=0, y0=0, side=128, size=128, image_shape=(128, 128))
    assert np.allclose(cam_to_original(cam, geometry), upsample_cam(cam, (128, 128)), atol=1e-3)
    # a crop placed at (20, 10) in a larger photo: the map moves with it and is 0 outside the crop
    geometry = CropGeometry(x0=20, y0=10, side=128, size=128, image_shape=(160, 200))
    heat = cam_to_original(cam, geometry)
    assert heat.shape == (160, 200)
    assert np.allclose(heat[10:138, 20:148], upsample_cam(cam, (128, 128)), atol=1e-3)
    assert heat[:9].max() == 0 and heat[:, 149:].max() == 0


def test_bad_inputs_raise_one_sentence_typed_errors():
    with pytest.raises(ModelError, match=r"has shape \(2, 3, 4, 5\) but a 2-D map \(H, W\) is needed"):
        upsample_cam(np.zeros((2, 3, 4, 5)), (8, 8))
    with pytest.raises(ModelError, match="contains NaN or infinite values"):
        propose_regions(np.full((4, 4), np.nan))
    with pytest.raises(ConfigError, match="Connectivity must be 4 or 8, got 6"):
        regions_from_heat(np.zeros((4, 4)), connectivity=6)
    with pytest.raises(ConfigError, match=r"region threshold must be within 0\.\.1"):
        regions_from_heat(np.zeros((4, 4)), threshold=1.5)
    with pytest.raises(ConfigError, match="Unknown CAM normalisation 'softmax'"):
        normalise_cam(np.zeros((4, 4)), "softmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fixed normalisation range"):
        normalise_cam(np.zeros((4, 4)), "fixed", (1.0, 1.0))
    with pytest.raises(ConfigError, match="pass a mask of the image size"):
        propose_regions(np.zeros((4, 4)), mask=np.ones((3, 3), bool))


def test_boxes_and_areas_match_opencv_statistics_on_blobs_rings_and_borders():
    import cv2

    for seed in range(12):
        rng = np.random.default_rng(seed)
        noise = cv2.GaussianBlur(rng.random((90, 120)).astype(np.float32), (0, 0), float(rng.uniform(0.7, 3)))
        heat = (noise > np.quantile(noise, 0.6)).astype(np.float32)
        if seed == 0:  # islands inside the holes of rings, and a region touching every border
            heat[:] = 0
            ring = np.zeros((90, 120), np.uint8)
            cv2.circle(ring, (60, 45), 40, 1, 3)
            cv2.circle(ring, (60, 45), 20, 1, 2)
            cv2.circle(ring, (60, 45), 6, 1, -1)
            heat = ring.astype(np.float32)
            heat[0, :] = heat[:, 0] = heat[-1, :] = heat[:, -1] = 1
        for connectivity in (4, 8):
            props = regions_from_heat(heat, 0.5, connectivity)
            n, _, stats, _ = cv2.connectedComponentsWithStats((heat >= 0.5).astype(np.uint8),
                                                              connectivity=connectivity)
            got = sorted(((r.x, r.y, r.w, r.h), r.area) for r in props.regions)
            assert got == sorted((tuple(int(v) for v in stats[i, :4]), int(stats[i, 4])) for i in range(1, n))
            assert all(props.mask(r).sum() == r.area for r in props.regions)

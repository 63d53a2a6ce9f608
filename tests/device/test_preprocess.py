"""Shared preprocessing on generated photographs: FOV finding, cropping, geometry, normalisation, bad input."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from device.errors import BlankImageError, ImageReadError, ImageTooSmallError, NotFundusError
from device.fov import find_fov
from device.imageio import load_image
from device.preprocess import MIN_SIDE_PX, crop_to_fov, preprocess, standardise


def disc_photo(w=800, h=600, cx=None, cy=None, r=None, bg=8, noise=3.0, text=False, seed=0):
    """A fundus-like test photograph: an orange disc with a brightness gradient on a noisy near-black frame."""
    rng = np.random.default_rng(seed)
    cx = w / 2 if cx is None else cx
    cy = h / 2 if cy is None else cy
    r = 0.45 * min(w, h) if r is None else r
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    shade = 0.6 + 0.4 * (xx / w)  # uneven illumination: darker on the left
    img = np.empty((h, w, 3), np.float32)
    for c, level in enumerate((190, 95, 40)):
        img[..., c] = np.where(inside, level * shade, bg)
    img += rng.normal(0, noise, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if text:
        cv2.putText(img, "ID 12345 2026-11-26", (5, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return img


def encode(rgb, ext=".png", **pil_kwargs):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG" if ext == ".png" else "JPEG", **pil_kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    "w,h,cx,cy,r",
    [
        (800, 600, 400, 300, 270),  # whole disc inside the frame
        (900, 600, 450, 300, 360),  # clipped at top and bottom (Kaggle 4752x3168 style)
        (640, 640, 320, 320, 314),  # disc almost fills the frame
        (800, 600, 380, 320, 250),  # off-centre
    ],
)
def test_find_fov_recovers_disc(w, h, cx, cy, r):
    fov = find_fov(disc_photo(w, h, cx, cy, r, text=True))
    assert abs(fov.cx - cx) < 0.01 * r + 1
    assert abs(fov.cy - cy) < 0.01 * r + 1
    assert abs(fov.radius - r) < 0.015 * r + 1
    assert fov.clipped == (cy - r < 0 or cy + r > h)


def test_noisy_background_that_is_not_zero():
    rgb = disc_photo(bg=25, noise=6.0)
    fov = find_fov(rgb)
    truth = disc_photo(bg=25, noise=0.0)[..., 0] > 60
    mask = fov.mask()
    assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def test_crop_is_centred_square_with_fov_mask():
    rgb = disc_photo(900, 600, 450, 300, 360)
    pre = preprocess(rgb, size=128)
    assert pre.rgb.shape == (128, 128, 3) and pre.rgb.dtype == np.uint8
    assert pre.image.shape == (128, 128, 3) and pre.image.dtype == np.float32
    g = pre.geometry
    assert abs(g.x0 + g.side / 2 - 450) <= 1.5 and abs(g.y0 + g.side / 2 - 300) <= 1.5
    # Clipped top and bottom: the mask's rows stop where the photograph stops (y = 0 and y = 600).
    rows = np.flatnonzero(pre.fov_mask.any(axis=1))
    expected_top = (0 - g.y0) * g.scale
    assert abs(rows[0] - expected_top) <= 2
    assert pre.rgb[~pre.fov_mask].max() == 0


def test_standardisation_inside_fov():
    pre = preprocess(disc_photo(), size=96)
    inside = pre.image[pre.fov_mask]
    assert abs(float(inside.mean())) < 1e-4
    assert abs(float(inside.std()) - 1.0) < 1e-3
    assert np.all(pre.image[~pre.fov_mask] == 0)
    lc = standardise(pre.rgb, pre.fov_mask, method="local_contrast")
    assert abs(float(lc[pre.fov_mask].mean())) < 1e-4
    scaled = standardise(pre.rgb, pre.fov_mask, method="scale_127")  # the ImageNet EfficientNet-Lite input
    np.testing.assert_allclose(scaled[pre.fov_mask], (pre.rgb[pre.fov_mask].astype(np.float32) - 127) / 128,
                               atol=1e-6)
    assert np.all(scaled[~pre.fov_mask] == 0)
    batch = standardise(np.stack([pre.rgb] * 2), np.stack([pre.fov_mask] * 2), method="scale_127")
    np.testing.assert_array_equal(batch[1], scaled)
    with pytest.raises(ValueError, match="Unknown normalisation"):
        standardise(pre.rgb, pre.fov_mask, method="bogus")


def test_geometry_maps_crop_back_onto_photograph():
    rgb = disc_photo(900, 600, 450, 300, 360)
    fov = find_fov(rgb)
    crop, mask, g = crop_to_fov(rgb, fov, 64)
    heat = np.zeros((4, 4), np.float32)  # a CAM-like map at 1/16 of the crop
    heat[1, 2] = 1.0
    back = g.map_to_original(heat, interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(back)
    cell = g.side / 4  # cell (1, 2) covers this square of the photograph
    assert abs(xs.min() - (g.x0 + 2 * cell)) <= 1 and abs(xs.max() - (g.x0 + 3 * cell)) <= 1
    assert abs(ys.min() - max(0, g.y0 + cell)) <= 1
    box = g.box_to_original(32, 16, 16, 16)
    assert abs(box[0] - (g.x0 + 32 / g.scale)) <= 1 and abs(box[2] - 16 / g.scale) <= 2


def test_16bit_grey_rgba_and_exif(tmp_path):
    rgb = disc_photo(400, 300)
    bgr16 = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), bgr16)
    assert np.array_equal(load_image(tmp_path / "deep.png"), rgb)
    cv2.imwrite(str(tmp_path / "grey.png"), rgb[..., 0])
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (300, 400, 3) and np.array_equal(grey[..., 1], rgb[..., 0])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert np.array_equal(load_image(encode(rgba)), rgb)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(rgb, ".jpg", exif=exif, quality=95)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
        got = load_image(data)
        assert got.shape == expected.shape, orientation
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0, orientation


def test_corrupt_files_get_one_sentence_errors(tmp_path):
    good = encode(disc_photo(400, 300), ".jpg", quality=90)
    cases = {
        "empty.jpeg": (b"", "is empty (0 bytes)"),
        "truncated.jpeg": (good[: len(good) // 2], "truncated JPEG"),
        "notes.jpeg": (b"patient list\nthis is text, not a photo\n" * 20, "not a readable image"),
        "cut.png": (encode(disc_photo(400, 300))[:500], "truncated PNG"),
    }
    for name, (data, phrase) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageReadError) as err:
            load_image(tmp_path / name)
        message = str(err.value)
        assert phrase in message and name in message
        assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    with pytest.raises(ImageReadError, match="does not exist; check the path"):
        load_image(tmp_path / "missing.jpeg")


def test_content_errors_say_what_to_do():
    with pytest.raises(ImageTooSmallError, match=f"smaller than the {MIN_SIDE_PX} px minimum"):
        preprocess(disc_photo(200, 150))
    with pytest.raises(BlankImageError, match="almost completely black; check the flash"):
        preprocess(np.random.default_rng(0).integers(0, 4, (480, 640, 3)).astype(np.uint8))
    with pytest.raises(BlankImageError, match="no detail"):
        preprocess(np.full((480, 640, 3), 128, np.uint8))
    # A bright picture with no dark border (a room, a document) is not a fundus photograph.
    scene = np.clip(np.random.default_rng(1).normal(140, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
    with pytest.raises(NotFundusError, match="fundus photograph"):
        preprocess(scene)
    # A bright square on black is not round.
    square = np.full((480, 640, 3), 5, np.uint8)
    square[60:420, 140:500] = (180, 90, 40)
    with pytest.raises(NotFundusError, match="retake it"):
        preprocess(square)

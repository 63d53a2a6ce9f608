"""The quality gate's measurements of one photograph (device.quality applies thresholds and the learned score).

Every metric is measured on the FOV-centred crop resampled to ``GATE_SIZE`` pixels across the retina, and is a
ratio or a fraction rather than a raw level wherever the camera, the JPEG quality or earlier processing (a
contrast stretch, a resize) could shift the level: focus and sharpness compare fine with coarse detail of the same
photograph, contrast is relative to the local brightness, and the glare test looks for a large flat saturated
patch rather than any bright pixel (the optic disc, vessel reflexes and the rim of a stretched photograph are
bright but small, thin or outside the measured area). The only absolute levels are the exposure checks, which
are about the sensor: too few light levels (dark) or too many clipped pixels (bright).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from device.preprocess import PreprocessedImage, crop_to_fov

# The scale the gate measures at, in pixels across the FOV. 256 px is the smallest retina the gate accepts
# (MIN_FOV_DIAMETER_PX in device.quality), so every gradable photograph is measured at or below its own
# resolution, and the numbers do not depend on the camera or on the model's input size.
GATE_SIZE = 256
# Of GATE_SIZE: the texture metrics skip the soft FOV rim (and the bright ring of contrast-stretched copies).
RIM_ERODE_FRACTION = 0.04
MAX_SMOOTH_REDUCTION = 4  # wide blurs run on reduced copies (see _smooth)
SATURATED_LEVEL = 250  # 8-bit: a channel at or above this is clipped
GLARE_LEVEL = 245  # 8-bit luminance of a glare patch (JPEG rounds a clipped flare down a few levels)
GLARE_OPEN_PX = 5  # opening before measuring glare patches: removes vessel reflexes (1-3 px wide at 256 px)
VESSEL_CLOSE_PX = 11  # black top-hat size: vessels are up to ~8 px wide at 256 px across the retina
VESSEL_LEVEL = 0.06  # a pixel this much (relative) darker than its closed surroundings is on a vessel
SECTORS = 16  # 8 angular sectors x 2 rings, for "are vessels visible everywhere"
SECTOR_VESSEL_FRACTION = 0.02
BLOCKS = 8  # 8x8 blocks of 32 px for the "how much of the retina is unusable" metrics
BLOCK_MIN_INSIDE = 0.6  # a block counts when this much of it lies inside the (eroded) FOV
DARK_BLOCK_RATIO = 0.4  # a block darker than this fraction of the median block is in shadow
BLUR_BLOCK_FOCUS = 0.6  # a block whose own focus ratio is below this is blurred
FLAT_BLOCK_CONTRAST = 0.05  # a block whose local contrast is below this shows no detail
# A photograph whose FOV was not found: its lit part is what lies above this fraction of its 99th-percentile
# brightness (a veiled retina is a near-uniform bright area on the dark margin, whatever its rim looks like).
LIT_FRACTION = 0.5
METRICS = (
    "fov_diameter_px", "centre_offset", "coverage", "mean_luma", "brightness", "clipped", "glare",
    "local_contrast", "vessels", "vessel_cover", "focus", "sharpness", "shadow_blocks", "blurred_blocks",
    "flat_blocks", "illumination_spread",
)


def _gate_crop(rgb: np.ndarray, pre: PreprocessedImage) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 crop and bool FOV mask at GATE_SIZE, reusing the model's crop when it is at least that large."""
    size = pre.rgb.shape[0]
    if size == GATE_SIZE:
        return pre.rgb, pre.fov_mask
    if size < GATE_SIZE:
        crop, mask, _ = crop_to_fov(rgb, pre.fov, GATE_SIZE)
        return crop, mask
    g = pre.geometry
    crop = cv2.resize(pre.rgb, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)
    mask = pre.fov.mask_in((GATE_SIZE, GATE_SIZE), g.x0, g.y0, GATE_SIZE / g.side)
    return cv2.bitwise_and(crop, crop, mask=mask.view(np.uint8)), mask


def _percentile_u8(values: np.ndarray, mask8: np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) of a uint8 image inside a mask, from its histogram."""
    hist = cv2.calcHist([values], [0], mask8, [256], [0, 256]).ravel()
    cum = np.cumsum(hist)
    return float(np.searchsorted(cum, q / 100.0 * cum[-1]))


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; a wide one runs on a copy reduced sigma / 2 times (at most 4x): it holds no fine detail."""
    k = int(min(MAX_SMOOTH_REDUCTION, sigma // 2))
    if k < 2:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    n = x.shape[0]
    small = cv2.resize(x, (n // k,) * 2, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / k)
    return cv2.resize(small, (n, n), interpolation=cv2.INTER_LINEAR)


def _masked_blur(x: np.ndarray, m: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of x over the mask only (normalised convolution): the rim's black does not leak in."""
    return _smooth(x * m, sigma) / np.maximum(_smooth(m, sigma), 1e-3)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _block_means(x: np.ndarray, weight: np.ndarray, weight_b: np.ndarray) -> np.ndarray:
    """Mean of x over each of BLOCKS x BLOCKS blocks, weighted by the mask (``weight_b``: its block means)."""
    return cv2.resize(x * weight, (BLOCKS, BLOCKS), interpolation=cv2.INTER_AREA) / np.maximum(weight_b, 1e-6)


def empty_metrics() -> dict[str, float]:
    """The metrics of a photograph whose FOV holds no pixels (never gradable)."""
    out = dict.fromkeys(METRICS, 0.0)
    out["centre_offset"] = 9.0
    return out


def measure(rgb: np.ndarray, pre: PreprocessedImage) -> dict[str, float]:
    """Measure the quality metrics of one photograph.

    Args:
        rgb: the original uint8 RGB photograph (H, W, 3).
        pre: its preprocessing (FOV and crop) at the model's input size.

    Returns:
        A dict with the keys of ``METRICS``: ``fov_diameter_px`` (original pixels across the FOV),
        ``centre_offset`` (FOV radii from the frame centre), ``coverage`` (fraction of the disc inside the frame),
        ``mean_luma`` (8-bit), ``brightness`` (95th percentile of the brightest channel, 8-bit), ``clipped``
        (fraction of FOV pixels with a channel >= 250), ``glare`` (largest flat saturated patch, fraction of the
        FOV), ``local_contrast`` (RMS of band-passed green over its local mean), ``vessels`` (fraction of the
        retina on a visible vessel), ``vessel_cover`` (fraction of 16 sectors with visible vessels), ``focus``
        (fine / coarse detail energy, 1 for a sharp photograph, ~0.4 when blurred), ``sharpness`` (strongest
        fine / coarse gradients), ``shadow_blocks``, ``blurred_blocks``, ``flat_blocks`` (fractions of 32 px
        blocks in shadow, blurred or without detail) and ``illumination_spread`` (std / median of block means).
    """
    fov = pre.fov
    h, w = rgb.shape[:2]
    crop, mask = _gate_crop(rgb, pre)
    m8 = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    n = cv2.countNonZero(m8)
    if n == 0:
        return empty_metrics()
    out: dict[str, float] = {
        "fov_diameter_px": float(2 * fov.radius),
        "centre_offset": float(np.hypot(fov.cx - (w - 1) / 2, fov.cy - (h - 1) / 2) / max(fov.radius, 1.0)),
        "coverage": float(min(1.0, n / (np.pi * (GATE_SIZE / 2) ** 2))),
    }
    luma = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    out["mean_luma"] = float(cv2.mean(luma, mask=m8)[0])
    value = cv2.max(cv2.max(crop[..., 0], crop[..., 1]), crop[..., 2])
    out["brightness"] = _percentile_u8(value, m8, 95)
    out["clipped"] = cv2.countNonZero(cv2.bitwise_and(cv2.compare(value, SATURATED_LEVEL, cv2.CMP_GE), m8)) / n
    k = max(3, int(RIM_ERODE_FRACTION * GATE_SIZE) | 1)
    inner8 = cv2.erode(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if cv2.countNonZero(inner8) < 0.2 * n:
        inner8 = m8
    out["glare"] = _glare(luma, inner8) / n
    out |= _texture(crop[..., 1], m8, inner8, luma)
    return out


def lit_contrast(rgb: np.ndarray) -> float:
    """``local_contrast`` of the lit part of a photograph whose field of view was not found.

    A fogged lens or a cataract can flatten a retina so much that its rim no longer stands out as a round disc
    (a veil lifts the margin's noise to the retina's level). The lit area (the largest bright region) is resampled
    to GATE_SIZE across and measured as ``local_contrast`` is inside a FOV, so the same threshold applies: a
    flat, veiled picture is "washed out" rather than "no retina found", and another picture with real detail
    (not a retina) keeps its "no retina" reason.

    Args:
        rgb: the original uint8 RGB photograph (H, W, 3).

    Returns:
        RMS of band-passed green over its local mean in the lit area (0 when nothing is lit).
    """
    h, w = rgb.shape[:2]
    s = min(1.0, 2 * GATE_SIZE / max(h, w))
    small = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))),
                                              interpolation=cv2.INTER_AREA)
    value = cv2.medianBlur(cv2.max(cv2.max(small[..., 0], small[..., 1]), small[..., 2]), 5)
    lit8 = cv2.compare(value, LIT_FRACTION * _percentile_u8(value, None, 99), cv2.CMP_GT)
    # An opening at the rim's erosion scale drops ragged bands of lifted margin noise around a veiled disc.
    o = max(3, int(2 * RIM_ERODE_FRACTION * min(value.shape)) | 1)
    lit8 = cv2.morphologyEx(lit8, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (o, o)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit8, connectivity=8)
    if count < 2:
        return 0.0
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[k, :4])
    side = max(bw, bh)
    if side < 8:
        return 0.0
    # The lit area on a black square canvas of its long side (the blurs work on square images), at GATE_SIZE.
    canvas = np.zeros((side, side, 3), np.uint8)
    region = np.zeros((side, side), np.uint8)
    oy, ox = (side - bh) // 2, (side - bw) // 2
    canvas[oy:oy + bh, ox:ox + bw] = small[y:y + bh, x:x + bw]
    region[oy:oy + bh, ox:ox + bw] = (labels[y:y + bh, x:x + bw] == k).view(np.uint8)
    crop = cv2.resize(canvas, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_AREA)
    m8 = cv2.resize(region, (GATE_SIZE, GATE_SIZE), interpolation=cv2.INTER_NEAREST)
    e = max(3, int(RIM_ERODE_FRACTION * GATE_SIZE) | 1)
    inner8 = cv2.erode(m8, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (e, e)))
    if cv2.countNonZero(inner8) < 0.2 * max(1, cv2.countNonZero(m8)):
        inner8 = m8
    if cv2.countNonZero(inner8) == 0:
        return 0.0
    *_, band = _relative_band(crop[..., 1], m8)
    return _masked_rms(band, inner8)


def _relative_band(green8: np.ndarray, m8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(green filled outside the mask with its local mean, green blurred sigma 1, the local mean, the band:
    blurred green minus the local mean, over the local mean)."""
    # Outside the FOV green is filled with the local mean, so blurs near the rim do not see the black border as
    # detail. Detail relative to the local brightness: gain, gamma and vignetting cancel.
    mf = m8.astype(np.float32)
    green = green8.astype(np.float32)
    green = np.where(m8.view(bool), green, _masked_blur(green, mf, 4.0))
    local = np.maximum(_masked_blur(green, mf, 8.0), 4.0)
    b1 = cv2.GaussianBlur(green, (0, 0), 1.0)
    return green, b1, local, (b1 - local) / local


def _glare(luma: np.ndarray, inner8: np.ndarray) -> float:
    """Pixels of the largest saturated patch that survives an opening (vessel reflexes do not), inside the rim."""
    sat = cv2.bitwise_and(cv2.compare(luma, GLARE_LEVEL, cv2.CMP_GE), inner8)
    if cv2.countNonZero(sat) < GLARE_OPEN_PX * GLARE_OPEN_PX:  # most photographs: nothing saturated
        return 0.0
    sat = cv2.morphologyEx(sat, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (GLARE_OPEN_PX,) * 2))
    count, _, stats, _ = cv2.connectedComponentsWithStats(sat, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0.0


def _masked_rms(x: np.ndarray, mask8: np.ndarray) -> float:
    """sqrt(mean(x**2)) over the mask (OpenCV's masked moments: no copy of the masked pixels)."""
    (mean,), (std,) = (v.ravel() for v in cv2.meanStdDev(x, mask=mask8))
    return float(np.sqrt(mean * mean + std * std))


def _texture(green8: np.ndarray, m8: np.ndarray, inner8: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    """Contrast, focus, sharpness, vessel and block metrics of the green channel inside the rim."""
    # Green carries the vessel contrast.
    green, b1, local, band = _relative_band(green8, m8)
    b05 = cv2.GaussianBlur(green, (0, 0), 0.5)
    b2 = cv2.GaussianBlur(green, (0, 0), 2.0)
    b4 = _smooth(green, 4.0)
    fine, coarse = green - b1, b2 - b4
    out = {"local_contrast": _masked_rms(band, inner8),
           "focus": _masked_rms(fine, inner8) / max(_masked_rms(coarse, inner8), 1e-6)}
    inner = inner8.view(bool)
    gf = cv2.magnitude(cv2.Sobel(b05, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b05, cv2.CV_32F, 0, 1, ksize=3))[inner]
    gc = cv2.magnitude(cv2.Sobel(b2, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(b2, cv2.CV_32F, 0, 1, ksize=3))[inner]
    q = int(0.95 * (gf.size - 1))
    out["sharpness"] = float(np.partition(gf, q)[q]) / max(float(np.partition(gc, q)[q]), 1e-6)

    kv = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (VESSEL_CLOSE_PX,) * 2)
    vessel8 = cv2.bitwise_and(((cv2.morphologyEx(b05, cv2.MORPH_CLOSE, kv) - b05) > VESSEL_LEVEL * local)
                              .view(np.uint8), inner8)
    out["vessels"] = cv2.countNonZero(vessel8) / max(1, cv2.countNonZero(inner8))
    out["vessel_cover"] = _vessel_cover(vessel8, inner8)

    wf = inner.astype(np.float32)
    wb = cv2.resize(wf, (BLOCKS, BLOCKS), interpolation=cv2.INTER_AREA)
    valid = wb > BLOCK_MIN_INSIDE
    if not valid.any():
        valid[...] = True
    lum_b = _block_means(luma.astype(np.float32), wf, wb)[valid]
    med = max(float(np.median(lum_b)), 1.0)
    coarse_b = np.maximum(_block_means(coarse * coarse, wf, wb), 1e-6)
    focus_b = np.sqrt(_block_means(fine * fine, wf, wb) / coarse_b)[valid]
    contrast_b = np.sqrt(_block_means(band * band, wf, wb))[valid]
    out["shadow_blocks"] = float(np.mean(lum_b < DARK_BLOCK_RATIO * med))
    out["blurred_blocks"] = float(np.mean(focus_b < BLUR_BLOCK_FOCUS))
    out["flat_blocks"] = float(np.mean(contrast_b < FLAT_BLOCK_CONTRAST))
    out["illumination_spread"] = float(np.std(lum_b) / med)
    return out


@functools.cache
def _sector_map() -> np.ndarray:
    """Sector index (0..SECTORS-1, uint8) of every pixel of the GATE_SIZE crop: 8 angles x inner / outer ring."""
    c = (GATE_SIZE - 1) / 2
    yy, xx = np.ogrid[:GATE_SIZE, :GATE_SIZE]
    half = SECTORS // 2
    sector = ((np.arctan2(yy - c, xx - c) + np.pi) / (2 * np.pi) * half).astype(np.int32) % half
    return (sector + half * (np.hypot(yy - c, xx - c) > 0.6 * GATE_SIZE / 2)).astype(np.uint8)


def _vessel_cover(vessel8: np.ndarray, inner8: np.ndarray) -> float:
    """Fraction of the SECTORS of the FOV in which vessels are visible."""
    sector = _sector_map()
    inside = cv2.calcHist([sector], [0], inner8, [SECTORS], [0, SECTORS]).ravel()
    on_vessel = cv2.calcHist([sector], [0], vessel8, [SECTORS], [0, SECTORS]).ravel()
    counted = inside > 50
    if not counted.any():
        return 0.0
    return float(np.mean(on_vessel[counted] / inside[counted] > SECTOR_VESSEL_FRACTION))

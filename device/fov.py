"""Finding the circular field of view (FOV) of a fundus photograph.

The FOV is the bright disc of retina on a dark background. Real photographs make this harder than a threshold:
the background is near-black JPEG noise rather than 0, circles are clipped at the top and bottom on some cameras
(Kaggle 4752x3168, 3888x2592), burnt-in text sits in the margin, and some frames are almost filled by the disc.
We threshold a small copy, keep the largest blob, and fit a circle to its boundary points that do *not* lie on the
frame edge, so a clipped disc still yields its true centre and radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.errors import BlankImageError, NotFundusError, subject

# Long side of the working copy: 1500 px photos fit their FOV to about 2 px there (DiaretDB1 IoU >= 0.97).
WORK_SIZE = 640
CORNER_FRACTION = 0.04  # corner patches used to estimate the background level
MIN_CONTRAST = 12.0  # 8-bit levels: a photo darker than this is black; retina must exceed the corners by this
FLAT_STD = 2.0  # 8-bit levels: a (median-filtered) picture varying less than this is flat
# FOV threshold = background + a fraction of (retina - background), tried in this order. Vignetted rims of
# DiaretDB1 photos fall to ~15 levels on a ~130 retina, so the first must stay well below 0.1; the higher ones
# rescue contrast-enhanced copies whose margin noise was amplified to 20-100 levels next to a ~240 retina
# (EyePACS); their noise floor (NOISE_SIGMAS) is dropped, since amplified noise can reach into a dim retina.
THRESHOLD_FRACTIONS = (0.05, 0.15, 0.3, 0.5)
MIN_THRESHOLD_MARGIN = 5.0  # ... and at least this far above the background (JPEG noise is ~1-3 levels)
NOISE_SIGMAS = 5.0  # ... and this many background noise sigmas (robust, from the corners' MAD)
MIN_RADIUS_FRACTION = 0.2  # a FOV smaller than this fraction of the short side is not a usable fundus photograph
MIN_FILL = 0.85  # fraction of the fitted disc (inside the frame) that the bright blob must cover
# The unclipped rim must span this much of the circle, in at least MIN_QUADRANTS quadrants, to trust a fit: a disc
# cut deeply on all four sides shows only four short corner arcs (but see MIN_ARC_DEGREES_ALL_QUADRANTS).
MIN_ARC_DEGREES = 60.0
MIN_QUADRANTS = 2
# ... unless the arcs lie in all four quadrants: a retina that fills the frame (a photograph already cropped to
# the retina, or a camera whose field is larger than its sensor) shows only its four corner arcs, and four
# opposite arcs pin the circle down as well as one long one.
MIN_ARC_DEGREES_ALL_QUADRANTS = 20.0
# Boundary points this close to the blob's bounding box count as "cut by the frame, the camera's aperture or a
# letterboxing resize" (DiaretDB1's aperture cuts the disc 6 px inside its 1152 px frame).
EDGE_MARGIN_PX = 2
EDGE_MARGIN_FRACTION = 0.01
OPENING_FRACTION = 0.015
BAR_LEVEL = 3  # 8-bit: a whole row or column at or below this (after the median filter) is a letterbox bar
MIN_INLIER_FRACTION = 0.6  # share of the unclipped rim within INLIER_TOLERANCE of the fitted circle (a square: ~0.3)
INLIER_TOLERANCE = 0.04  # fraction of the radius: Kaggle rims are notched and jagged after JPEG and resizing
# The rim is a soft transition 4-8 px wide at 1500 px (measured on DiaretDB1 and the Kaggle originals); its
# half-dark pixels are neither retina nor background, so the FOV is pulled in by this fraction of the radius.
RIM_EROSION_FRACTION = 0.006


@dataclass(frozen=True)
class FieldOfView:
    """A circular field of view in original-photograph pixel coordinates (pixel centres at integers).

    Attributes:
        cx, cy: centre (may lie outside the frame for strongly clipped discs).
        radius: radius in pixels.
        image_shape: (H, W) of the photograph.
        clipped: True when the disc is cut by the frame or by a straight aperture edge.
        bounds: (left, top, right, bottom) pixel-edge coordinates of the visible retina; a disc clipped by the
            camera's rectangular aperture is cut along these lines.
    """

    cx: float
    cy: float
    radius: float
    image_shape: tuple[int, int]
    clipped: bool
    bounds: tuple[float, float, float, float]

    def mask(self) -> np.ndarray:
        """Boolean (H, W) mask of the visible disc."""
        return self.mask_in(self.image_shape, 0.0, 0.0, 1.0)

    def mask_in(self, shape: tuple[int, int], x0: float, y0: float, scale: float) -> np.ndarray:
        """The FOV mask on a grid whose pixel edges are ``x0 + u / scale`` (a crop resized by ``scale``)."""
        cx = (self.cx + 0.5 - x0) * scale - 0.5
        cy = (self.cy + 0.5 - y0) * scale - 0.5
        mask = disc_mask(shape, cx, cy, self.radius * scale)
        left, top, right, bottom = ((b - o) * scale for b, o in zip(self.bounds, (x0, y0, x0, y0)))
        cols = np.arange(shape[1]) + 0.5
        rows = np.arange(shape[0]) + 0.5
        mask &= ((rows >= top) & (rows <= bottom))[:, None]
        mask &= ((cols >= left) & (cols <= right))[None, :]
        return mask


def disc_mask(shape: tuple[int, int], cx: float, cy: float, radius: float) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie inside the circle (cx, cy, radius)."""
    h, w = shape
    ys = (np.arange(h, dtype=np.float32) - cy) ** 2
    xs = (np.arange(w, dtype=np.float32) - cx) ** 2
    return (ys[:, None] + xs[None, :]) <= radius * radius


def find_fov(rgb: np.ndarray, label: str = "the photograph") -> FieldOfView:
    """Locate the circular field of view.

    Args:
        rgb: uint8 RGB photograph (H, W, 3).
        label: how to name the image in error messages.

    Returns:
        The fitted FieldOfView, in original pixels.

    Raises:
        BlankImageError: the photograph is black or flat.
        NotFundusError: no round, bright field of view on a dark background was found.
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIZE / max(h, w))
    # Decimate big photos by striding first (centred samples, so the half-pixel mapping holds): an area resize
    # of all 16 Mpx of a 4928x3264 photo costs more than the rest of the FOV search.
    step = max(1, int(max(h, w) / (2 * WORK_SIZE)))
    source = rgb[step // 2 :: step, step // 2 :: step] if step > 1 else rgb
    # Area averaging matters for big reductions; below 2x bilinear is 3x faster and the median filter below
    # removes what little aliasing it leaves.
    size_small = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if source.shape[1] >= 2 * size_small[0] else cv2.INTER_LINEAR
    small = cv2.resize(source, size_small, interpolation=interp)
    # Brightest channel: red dominates fundus photos, but grey and red-free photos must work too.
    r, g, b = cv2.split(small)
    value = cv2.medianBlur(cv2.max(cv2.max(r, g), b), 5)  # uint8: OpenCV's max and reductions beat numpy's here
    # Letterbox bars (exact black added by a resize or a viewer) would hide the real margin's noise level.
    oy, ox, value = _trim_bars(value)

    background, noise, retina = _levels(value)
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(value))
    if np.count_nonzero(value >= MIN_CONTRAST) < 0.01 * value.size:
        raise BlankImageError(f"{_cap(label)} is almost completely black; check the flash and retake it.")
    if std < FLAT_STD:
        raise BlankImageError(f"{_cap(label)} shows no detail (a flat, uniform picture); retake it with the retina in "
                              "view.")
    if retina - background < MIN_CONTRAST:
        raise NotFundusError(
            f"{_cap(label)} has no dark border around a round retina, so it does not look like a fundus photograph; "
            "retake it with the eye centred in the frame."
        )
    # Contrast-enhanced copies amplify the margin's JPEG noise (and some cameras leave a grey margin), so a
    # threshold just above the corners can merge the margin with the disc: retry with higher ones. The first
    # fraction is the one every unprocessed photograph passes with; the others only run when it fails.
    error: NotFundusError | None = None
    for fraction in THRESHOLD_FRACTIONS:
        floor = NOISE_SIGMAS * noise if fraction == THRESHOLD_FRACTIONS[0] else 0.0
        threshold = background + max(MIN_THRESHOLD_MARGIN, floor, fraction * (retina - background))
        try:
            cx, cy, r, bounds, clipped = _disc(value > threshold, label)
            break
        except NotFundusError as err:
            error = error or err
    else:
        raise error
    inv = 1.0 / scale
    rim = RIM_EROSION_FRACTION * r
    bounds = (bounds[0] + rim + ox, bounds[1] + rim + oy, bounds[2] - rim + ox, bounds[3] - rim + oy)
    cx, cy = cx + ox, cy + oy
    # Working-copy pixel centres map to original centres through the half-pixel convention.
    return FieldOfView(
        cx=(cx + 0.5) * inv - 0.5, cy=(cy + 0.5) * inv - 0.5, radius=(r - rim) * inv, image_shape=(h, w),
        clipped=bool(clipped), bounds=tuple(b * inv for b in bounds),
    )


def _disc(binary: np.ndarray, label: str) -> tuple[float, float, float, tuple[float, float, float, float], bool]:
    """The disc of one thresholded working copy: (cx, cy, r, pixel-edge bounds of the visible retina, clipped).

    Raises:
        NotFundusError: the bright region is not a round disc on a dark border.
    """
    sh, sw = binary.shape
    blob = _largest_blob(binary)
    if blob is None:
        raise NotFundusError(f"No retina was found in {label}; retake it with the eye centred in the frame.")
    points = _free_boundary_points(blob)
    cx, cy, r = _fit_circle(points, label)
    fitted = disc_mask((sh, sw), cx, cy, r)
    fill = np.count_nonzero(blob & fitted) / max(1, np.count_nonzero(fitted))
    spill = np.count_nonzero(blob & ~fitted) / max(1, np.count_nonzero(blob))
    if r < MIN_RADIUS_FRACTION * min(sh, sw) or fill < MIN_FILL or spill > 1 - MIN_FILL:
        raise NotFundusError(
            f"{_cap(label)} does not look like a fundus photograph (no round field of view on a dark background); "
            "retake it with the eye centred in the frame."
        )
    if np.count_nonzero(~fitted) < 0.02 * sh * sw:
        raise NotFundusError(
            f"{_cap(label)} has no dark border around the retina, so it does not look like a fundus photograph; "
            "retake it with the whole field of view in the frame."
        )
    rows = np.flatnonzero(blob.any(axis=1))
    cols = np.flatnonzero(blob.any(axis=0))
    # Pixel-edge bounds of the blob; they only cut the disc where an aperture or the frame clips it.
    bounds = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
    clipped = bounds[1] > cy - r + 2 or bounds[3] < cy + r - 2 or bounds[0] > cx - r + 2 or bounds[2] < cx + r - 2
    return cx, cy, r, bounds, clipped


def _cap(text: str) -> str:
    return subject(text)


def _trim_bars(value: np.ndarray) -> tuple[int, int, np.ndarray]:
    """Drop rows and columns of pure black at the edges; returns (row offset, column offset, the rest)."""
    rows = np.flatnonzero(value.max(axis=1) > BAR_LEVEL)
    cols = np.flatnonzero(value.max(axis=0) > BAR_LEVEL)
    if len(rows) < 0.5 * value.shape[0] or len(cols) < 0.5 * value.shape[1]:
        return 0, 0, value  # mostly black: let the blank-image checks speak
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return int(r0), int(c0), value[r0:r1, c0:c1]


def _levels(value: np.ndarray) -> tuple[float, float, float]:
    """Background level and noise (median and MAD of the four corners), retina level (75th percentile of the centre)."""
    h, w = value.shape
    ch, cw = max(2, int(h * CORNER_FRACTION)), max(2, int(w * CORNER_FRACTION))
    corners = np.concatenate(
        [value[:ch, :cw].ravel(), value[:ch, -cw:].ravel(), value[-ch:, :cw].ravel(), value[-ch:, -cw:].ravel()]
    ).astype(np.float32)
    centre = value[h // 4 : 3 * h // 4 : 2, w // 4 : 3 * w // 4 : 2]  # every other pixel: a percentile, not an edge
    background = float(np.median(corners))
    noise = 1.4826 * float(np.median(np.abs(corners - background)))
    return background, noise, float(np.percentile(centre, 75))


def _largest_blob(binary: np.ndarray) -> np.ndarray | None:
    """The largest connected bright region, holes filled (vessels, lesions and dark macula stay inside)."""
    # Opening at ~1.5 % of the frame cuts the thin bridges that amplified JPEG noise in the black margin builds
    # to the rim (seen on contrast-enhanced EyePACS copies), without denting the disc.
    k = max(3, int(round(OPENING_FRACTION * min(binary.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    binary = cv2.morphologyEx(binary.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (labels == biggest).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(blob)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _free_boundary_points(blob: np.ndarray) -> np.ndarray:
    """Boundary points of the blob away from its bounding-box edges: the real rim of the disc.

    A disc cut by the frame or by the camera's aperture (or letterboxed by a resize) has straight edges on its
    bounding box; points there are not on the circle. An uncut disc only loses its four tips, ~11 degrees each.
    """
    contours, _ = cv2.findContours(blob.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    h, w = blob.shape
    m = max(EDGE_MARGIN_PX, EDGE_MARGIN_FRACTION * min(h, w))
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    free = (pts[:, 0] > x0 + m) & (pts[:, 0] < x1 - m) & (pts[:, 1] > y0 + m) & (pts[:, 1] < y1 - m)
    return pts[free]


def _fit_circle(points: np.ndarray, label: str) -> tuple[float, float, float]:
    """Least-squares circle (Kasa) refined twice without outliers (text or notches touching the rim)."""
    not_round = NotFundusError(
        f"{_cap(label)} has no round field of view (its rim is hidden or straight); retake it with the whole retina in "
        "view."
    )
    if len(points) < 20:
        raise not_round
    keep = np.ones(len(points), bool)
    cx = cy = r = 0.0
    for _ in range(3):
        p = points[keep]
        a = np.column_stack([2 * p[:, 0], 2 * p[:, 1], np.ones(len(p))])
        b = (p**2).sum(axis=1)
        sol, *_ = np.linalg.lstsq(a, b, rcond=None)
        cx, cy = sol[0], sol[1]
        r = float(np.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0)))
        resid = np.abs(np.hypot(points[:, 0] - cx, points[:, 1] - cy) - r)
        keep = resid < max(2.0, 3.0 * np.median(resid[keep]) + 1.0)
        if keep.sum() < 20:
            raise not_round
    angles = np.degrees(np.arctan2(points[keep, 1] - cy, points[keep, 0] - cx))
    on_circle = np.mean(resid < max(2.0, INLIER_TOLERANCE * r))
    quadrants = len(np.unique(((angles + 180.0) // 90).astype(int) % 4))
    min_arc = MIN_ARC_DEGREES_ALL_QUADRANTS if quadrants == 4 else MIN_ARC_DEGREES
    if (_arc_coverage(angles) < min_arc or quadrants < MIN_QUADRANTS or r <= 0
            or on_circle < MIN_INLIER_FRACTION):
        raise not_round
    # Contour points sit on the outermost inside pixels; the rim is half a pixel further out.
    return float(cx), float(cy), r + 0.5


def _arc_coverage(angles_deg: np.ndarray) -> float:
    """Degrees of the circle covered by boundary points, in 5-degree bins."""
    bins = np.unique(((angles_deg + 180.0) // 5).astype(int))
    return 5.0 * len(bins)

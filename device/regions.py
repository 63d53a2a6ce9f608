"""Region proposals from a class activation map (Gondal et al., ICIP 2017, §3.2).

CAM → upsample to the image → normalise to [0, 1] → threshold (0.65) → connected components → regions P_i, each
with its bounding box, area and score S_i = the maximum of the normalised CAM inside it. The unit, the evaluator and
the overlays all go through this module, so the pixel-centre convention lives in one place:

CAM cell ``i`` covers model pixels ``16i .. 16i+15`` (centre ``16i + 7.5``). ``cv2.resize`` with
``INTER_LINEAR`` maps destination pixel ``x`` to source ``(x + 0.5) * src/dst - 0.5`` (half-pixel centres), which is
exactly this convention for any integer or non-integer scale (docs/ARCHITECTURE.md).

Example::

    heat = upsample_cam(cam, (512, 512))            # (32, 32) -> (512, 512)
    proposals = propose_regions(heat)               # normalise, threshold 0.65, 8-connectivity
    for region in proposals.regions:
        print(region.x, region.y, region.w, region.h, region.area, region.score)
    mask = proposals.mask(proposals.regions[0])     # bool (H, W)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, get_args

import cv2
import numpy as np

from device.errors import ConfigError, ModelError

# Paper §3.2: the normalised CAM is thresholded at 0.65 to form region proposals (the unit reads each model's own
# value from its card; this is the default of the trainer, the evaluator and the fake model).
REGION_THRESHOLD = 0.65
# 8-connectivity groups diagonal neighbours, as the ground-truth components of the evaluator do.
DEFAULT_CONNECTIVITY = 8

Normalisation = Literal["max", "minmax", "fixed"]
NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)
# The modes a model card may name: those that need no fixed range.
CardCAMNormalisation = Literal["max", "minmax"]
CARD_CAM_NORMALISATIONS: tuple[str, ...] = get_args(CardCAMNormalisation)


@dataclass(frozen=True)
class RegionProposal:
    """One region proposal P_i, in the pixel grid of the map it was extracted from (model pixels on the unit).

    Attributes:
        x, y: top-left corner of the bounding box (pixels; x = column, y = row).
        w, h: bounding-box width and height (pixels).
        area: number of pixels in the component.
        score: maximum of the normalised CAM inside the region, in [0, 1].
        label: the component's label in :attr:`RegionProposals.labels` (1-based).
    """

    x: int
    y: int
    w: int
    h: int
    area: int
    score: float
    label: int

    def mask(self, labels: np.ndarray) -> np.ndarray:
        """Boolean mask (H, W) of this region, given the label image it came from."""
        return labels == self.label


@dataclass(frozen=True)
class RegionProposals:
    """The regions of one map plus the arrays they were taken from.

    Attributes:
        regions: regions sorted by descending score (ties: larger area first).
        labels: int32 (H, W) connected-component labels, 0 = background, region ``r`` has ``r.label``.
        threshold: the threshold used, on the normalised scale.
        bounds: (low, high) CAM values that the normalisation maps to 0 and 1.
    """

    regions: tuple[RegionProposal, ...]
    labels: np.ndarray = field(repr=False)
    _normalised: np.ndarray | None = field(repr=False, compare=False)
    threshold: float = REGION_THRESHOLD
    bounds: tuple[float, float] = (0.0, 1.0)
    _raw: np.ndarray | None = field(default=None, repr=False, compare=False)

    @cached_property
    def heat(self) -> np.ndarray:
        """float32 (H, W) normalised map in [0, 1] that was thresholded (computed on first access)."""
        if self._normalised is not None:
            return self._normalised
        low, high = self.bounds
        if high <= low:
            return np.zeros_like(self._raw)
        return np.clip((self._raw - np.float32(low)) * np.float32(1.0 / (high - low)), 0.0, 1.0)

    def mask(self, region: RegionProposal) -> np.ndarray:
        """Boolean mask (H, W) of one region."""
        return region.mask(self.labels)

    def union_mask(self) -> np.ndarray:
        """Boolean mask (H, W) of all regions together."""
        return self.labels > 0


def _check_map(cam: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(cam)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ModelError(f"The {what} has shape {tuple(np.shape(cam))} but a 2-D map (H, W) is needed; "
                         f"check that the model's 'cam' output is used.")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"The {what} contains NaN or infinite values; check the model file and its input.")
    return arr


def upsample_cam(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsample a CAM with the project's pixel-centre convention.

    Args:
        cam: (h, w) CAM (also accepts (1, h, w) or (h, w, 1)).
        size: target (height, width) in pixels, e.g. the model input (512, 512) or a photograph (1152, 1500).

    Returns:
        float32 (height, width) map; cell ``i`` of a 32-cell CAM upsampled to 512 covers pixels 16i..16i+15.
    """
    arr = _check_map(cam, "class activation map")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ConfigError(f"The upsampling size {size} is not a positive (height, width); pass the image size.")
    if arr.shape == (height, width):
        return arr.copy()
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_LINEAR)


def _bounds(arr: np.ndarray, mode: str, fixed_range: tuple[float, float]) -> tuple[float, float]:
    """(low, high) CAM values that map to 0 and 1; ``high <= low`` means a flat map (all zeros)."""
    if mode == "max":
        return 0.0, float(arr.max())
    if mode == "minmax":
        low, high = cv2.minMaxLoc(arr)[:2]
        return float(low), float(high)
    if mode == "fixed":
        low, high = float(fixed_range[0]), float(fixed_range[1])
        if not high > low:
            raise ConfigError(f"The fixed normalisation range {fixed_range} is empty; give (low, high) with "
                              "low < high.")
        return low, high
    raise ConfigError(f"Unknown CAM normalisation {mode!r}; use one of {', '.join(NORMALISATIONS)}.")


def normalise_cam(heat: np.ndarray, mode: Normalisation = "max",
                  fixed_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Normalise a map to [0, 1].

    Args:
        heat: (H, W) map in CAM units.
        mode: ``"max"`` divides by the image's maximum (negative values become 0; the paper's choice),
            ``"minmax"`` maps [min, max] to [0, 1], ``"fixed"`` maps ``fixed_range`` to [0, 1] and clips, so that
            scores are comparable across images.
        fixed_range: (low, high) CAM values for ``mode="fixed"``.

    Returns:
        float32 (H, W) in [0, 1]; an all-zero (or flat) map gives all zeros, never NaN.
    """
    arr = _check_map(heat, "heat map")
    low, high = _bounds(arr, mode, fixed_range)
    if high <= low:
        return np.zeros_like(arr)
    return np.clip((arr - np.float32(low)) * np.float32(1.0 / (high - low)), 0.0, 1.0)


def _components(binary: np.ndarray, connectivity: int) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    """Label image and ``[(label, (x, y, w, h)), ...]`` of a uint8 binary map.

    OpenCV's labelling without statistics is an order of magnitude faster than with them at 1500x1152 (measured:
    1.5 ms vs 20 ms), so with 8-connectivity the boxes come from the outer contours instead (each outer contour
    is exactly one 8-connected component; islands inside holes are outer contours too with RETR_CCOMP). With
    4-connectivity, or if the counts disagree, OpenCV's statistics are used.
    """
    if connectivity == 8:
        n, labels = cv2.connectedComponents(binary, connectivity=8, ltype=cv2.CV_32S)
        if n <= 1:
            return labels, []
        contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        outer = [c for c, h in zip(contours, hierarchy[0]) if h[3] < 0]
        if len(outer) == n - 1:
            boxes = [(int(labels[c[0, 0, 1], c[0, 0, 0]]), tuple(int(v) for v in cv2.boundingRect(c))) for c in outer]
            if len({b[0] for b in boxes}) == n - 1:
                return labels, sorted(boxes)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=connectivity, ltype=cv2.CV_32S)
    return labels, [(i, tuple(int(v) for v in stats[i, :4])) for i in range(1, n)]


def _label(heat: np.ndarray, low: float, high: float, threshold: float, connectivity: int, min_area: int,
           normalised: np.ndarray | None) -> RegionProposals:
    """Components of ``heat >= low + threshold * (high - low)``, scored on the normalised scale."""
    if connectivity not in (4, 8):
        raise ConfigError(f"Connectivity must be 4 or 8, got {connectivity}.")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"The region threshold must be within 0..1 (the paper uses {REGION_THRESHOLD}), got "
                          f"{threshold}.")
    flat = high <= low
    scale = 0.0 if flat else 1.0 / (high - low)
    if flat:
        binary = np.full(heat.shape, 1 if threshold <= 0 else 0, np.uint8)
    else:  # threshold the raw map: no full-size normalised copy is needed (speed: a few ms at 1500x1152)
        binary = (heat >= np.float32(low + threshold * (high - low))).view(np.uint8)
    labels, boxes = _components(binary, connectivity)
    regions = []
    for i, (x, y, w, h) in boxes:
        inside = labels[y:y + h, x:x + w] == i
        area = int(np.count_nonzero(inside))
        if area < min_area:
            labels[y:y + h, x:x + w][inside] = 0
            continue
        peak = float(heat[y:y + h, x:x + w][inside].max())
        score = 0.0 if flat else min(1.0, max(0.0, (peak - low) * scale))
        regions.append(RegionProposal(x=x, y=y, w=w, h=h, area=area, score=score, label=i))
    regions.sort(key=lambda r: (-r.score, -r.area))
    return RegionProposals(tuple(regions), labels, normalised, threshold, (low, high), heat)


def regions_from_heat(heat01: np.ndarray, threshold: float = REGION_THRESHOLD,
                      connectivity: int = DEFAULT_CONNECTIVITY, min_area: int = 1) -> RegionProposals:
    """Threshold an already-normalised map in [0, 1] and label its connected components.

    Args:
        heat01: float32 (H, W) map in [0, 1] (see :func:`normalise_cam`).
        threshold: a pixel belongs to a region when ``heat01 >= threshold``.
        connectivity: 4 or 8.
        min_area: components smaller than this (pixels) are dropped.

    Returns:
        :class:`RegionProposals` with regions sorted by descending score.
    """
    arr = _check_map(heat01, "heat map")
    return _label(arr, 0.0, 1.0, threshold, connectivity, min_area, arr)


def label_components(heat: np.ndarray, threshold: float = REGION_THRESHOLD,
                     connectivity: int = DEFAULT_CONNECTIVITY, normalisation: Normalisation = "max",
                     fixed_range: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """The components of :func:`propose_regions` without per-region scores or boxes (fast path for sweeps).

    Args:
        heat: float32 (H, W) map in CAM units, already checked (finite) and masked.
        threshold, connectivity, normalisation, fixed_range: as for :func:`propose_regions`.

    Returns:
        (labels int32 (H, W) with 0 = background, areas int64 (n,) with ``areas[i - 1]`` for label i).
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"Connectivity must be 4 or 8, got {connectivity}.")
    low, high = _bounds(heat, normalisation, fixed_range)
    if high <= low:
        binary = np.full(heat.shape, 1 if threshold <= 0 else 0, np.uint8)
    else:
        binary = (heat >= np.float32(low + threshold * (high - low))).view(np.uint8)
    n, labels = cv2.connectedComponents(binary, connectivity=connectivity, ltype=cv2.CV_32S)
    if n <= 1:
        return labels, np.zeros(0, np.int64)
    return labels, np.bincount(labels.ravel(), minlength=n)[1:].astype(np.int64)


def propose_regions(cam: np.ndarray, size: tuple[int, int] | None = None, threshold: float = REGION_THRESHOLD,
                    connectivity: int = DEFAULT_CONNECTIVITY, normalisation: Normalisation = "max",
                    fixed_range: tuple[float, float] = (0.0, 1.0), mask: np.ndarray | None = None,
                    min_area: int = 1) -> RegionProposals:
    """The paper's region proposals: upsample, normalise, threshold, connected components.

    Args:
        cam: (h, w) CAM or an already upsampled heat map, in CAM units.
        size: (height, width) to upsample to; ``None`` keeps the map's own size.
        threshold: region threshold on the normalised map (paper: 0.65).
        connectivity: 4 or 8.
        normalisation: ``"max"`` (paper), ``"minmax"`` or ``"fixed"``; see :func:`normalise_cam`.
        fixed_range: (low, high) for ``"fixed"``.
        mask: optional bool (H, W) field of view; pixels outside are set to 0 before normalising.
        min_area: drop components smaller than this many pixels.

    Returns:
        :class:`RegionProposals`; ``heat`` (computed on first access) is the normalised map at ``size``.
    """
    heat = upsample_cam(cam, size) if size is not None else _check_map(cam, "heat map")
    if mask is not None:
        if mask.shape != heat.shape:
            raise ConfigError(f"The mask has shape {mask.shape} but the heat map has {heat.shape}; "
                              f"pass a mask of the image size.")
        heat = np.where(mask, heat, np.float32(0.0))
    low, high = _bounds(heat, normalisation, fixed_range)
    return _label(heat, low, high, threshold, connectivity, min_area, None)


def cam_to_original(cam: np.ndarray, geometry) -> np.ndarray:
    """Map a model-space CAM onto the original photograph.

    The CAM is first upsampled to the model input (``geometry.size``) with :func:`upsample_cam`, then resampled
    onto the photograph by ``geometry.map_to_original`` (:class:`device.preprocess.CropGeometry`, bilinear, the
    same half-pixel-centre convention). Upsampling first matters: ``map_to_original`` pads with zeros, which on
    a 32x32 map would fade the outer half cell (8 model pixels) of the crop towards 0; at model resolution the
    fade is under one model pixel.

    Args:
        cam: (h, w) CAM of the preprocessed crop.
        geometry: the ``CropGeometry`` returned with the crop by ``device.preprocess.preprocess``.

    Returns:
        float32 (H, W) heat map in CAM units on the original photograph (0 outside the crop).
    """
    heat = upsample_cam(cam, (int(geometry.size), int(geometry.size)))
    return np.asarray(geometry.map_to_original(heat, cv2.INTER_LINEAR), dtype=np.float32)

"""Fundus preprocessing shared by the trainer, the evaluator and the unit (DESIGN.md §2.2).

photograph -> field of view -> square crop around it -> resize to the model size -> per-image standardisation
inside the FOV. The returned :class:`CropGeometry` maps anything computed on the crop (heat maps, boxes) back
onto the original photograph. Pure functions of numpy arrays; no I/O except :func:`preprocess_file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from device.errors import ImageTooSmallError, subject
from device.fov import FieldOfView, find_fov
from device.imageio import load_image

# Bump whenever the output of preprocess() changes for the same input: training caches record it and
# rebuild themselves when it differs.
PREPROCESS_VERSION = "1"
DEFAULT_SIZE = 512  # DESIGN.md §2.1: the network's input
MIN_SIDE_PX = 224  # smaller photographs cannot resolve red small dots (1-3 px at 512) and are refused
STD_FLOOR = 1.0  # 8-bit levels: keeps a flat crop from dividing by ~0
# The standardise() methods a model can be trained with; model cards and training configs name one of these.
InputNormalisation = Literal["per_image", "local_contrast", "scale_127"]
NORMALISATIONS: tuple[str, ...] = get_args(InputNormalisation)
LOCAL_CONTRAST_SIGMA_FRACTION = 1 / 30  # Ben Graham, Kaggle DR 2015: blur sigma = crop size / 30
SCALE_127 = (127.0, 128.0)  # EfficientNet-Lite's ImageNet input: (rgb - 127) / 128, about [-1, 1]


@dataclass(frozen=True)
class CropGeometry:
    """The square crop, in original pixels, that was resized to the model input.

    Pixel centres sit at integers and edges at half-integers, so model pixel ``u`` covers original
    ``x0 + u / scale .. x0 + (u + 1) / scale`` (edges) with ``scale = size / side``.

    Attributes:
        x0, y0: top-left corner of the square in original pixels (may be negative for clipped discs).
        side: side of the square in original pixels.
        size: model input size in pixels.
        image_shape: (H, W) of the original photograph.
    """

    x0: int
    y0: int
    side: int
    size: int
    image_shape: tuple[int, int]

    @property
    def scale(self) -> float:
        """Model pixels per original pixel."""
        return self.size / self.side

    def map_to_original(self, heat: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Resample a map covering the crop (any resolution, e.g. the 32x32 CAM) onto the photograph.

        Args:
            heat: 2-D float array covering the square crop.
            interpolation: OpenCV flag; bilinear by default (the project's CAM convention).

        Returns:
            float32 (H, W) map in original pixels; 0 outside the crop.
        """
        h, w = self.image_shape
        a_x = heat.shape[1] / self.side
        a_y = heat.shape[0] / self.side
        # dst(x, y) = heat((x + 0.5 - x0) * a - 0.5): the half-pixel-centre convention of cv2.resize.
        m = np.array([[a_x, 0.0, (0.5 - self.x0) * a_x - 0.5], [0.0, a_y, (0.5 - self.y0) * a_y - 0.5]], np.float64)
        return cv2.warpAffine(
            heat.astype(np.float32), m, (w, h), flags=interpolation | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
        )

    def box_to_original(self, x: float, y: float, w: float, h: float) -> tuple[int, int, int, int]:
        """A box in model pixels (left, top, width, height) as an integer box in original pixels, clipped to the
        photo."""
        s = self.scale
        left, top = self.x0 + x / s, self.y0 + y / s
        right, bottom = left + w / s, top + h / s
        H, W = self.image_shape
        left, top = max(0.0, left), max(0.0, top)
        right, bottom = min(float(W), right), min(float(H), bottom)
        x, y = np.floor(left), np.floor(top)
        return int(x), int(y), max(0, int(np.ceil(right - x))), max(0, int(np.ceil(bottom - y)))


@dataclass(frozen=True)
class PreprocessedImage:
    """The network's view of one photograph.

    Attributes:
        rgb: uint8 (size, size, 3) crop, black outside the FOV (what training caches store).
        fov_mask: bool (size, size), the FOV inside the crop.
        image: float32 (size, size, 3), normalised inside the FOV, 0 outside (the model input).
        geometry: maps crop-space results back onto the photograph.
        fov: the field of view in original pixels.
    """

    rgb: np.ndarray
    fov_mask: np.ndarray
    image: np.ndarray
    geometry: CropGeometry
    fov: FieldOfView


def check_size(rgb: np.ndarray, label: str = "the photograph") -> None:
    """Refuse photographs whose short side is below MIN_SIDE_PX."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE_PX:
        raise ImageTooSmallError(
            f"{subject(label)} is only {w}x{h} pixels, smaller than the {MIN_SIDE_PX} px minimum; "
            "use the camera's full-resolution photograph."
        )


def crop_to_fov(rgb: np.ndarray, fov: FieldOfView,
                size: int = DEFAULT_SIZE) -> tuple[np.ndarray, np.ndarray, CropGeometry]:
    """Cut the square around the FOV (padding with black where it leaves the frame) and resize it.

    Returns:
        (uint8 crop (size, size, 3) black outside the FOV, bool FOV mask (size, size), geometry).
    """
    h, w = rgb.shape[:2]
    side = max(1, int(round(2 * fov.radius)))
    x0 = int(round(fov.cx - fov.radius))
    y0 = int(round(fov.cy - fov.radius))
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(w, x0 + side), min(h, y0 + side)
    if (sx0, sy0, sx1, sy1) == (x0, y0, x0 + side, y0 + side):
        square = rgb[y0 : y0 + side, x0 : x0 + side]  # inside the photo: resize a view, no copy
    else:
        # Only the part of the square inside the photo is copied; the rest stays black.
        square = np.zeros((side, side, 3), np.uint8)
        if sx1 > sx0 and sy1 > sy0:
            square[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(square, (size, size), interpolation=interp)
    geometry = CropGeometry(x0=x0, y0=y0, side=side, size=size, image_shape=(h, w))
    # FOV = the disc, minus whatever part of it the frame or the camera's aperture cuts off.
    mask = fov.mask_in((size, size), x0, y0, geometry.scale)
    crop = cv2.bitwise_and(crop, crop, mask=mask.view(np.uint8))
    return crop, mask, geometry


def standardise(rgb: np.ndarray, fov_mask: np.ndarray, method: str = "per_image") -> np.ndarray:
    """Normalise a uint8 crop inside its FOV: the model input.

    Args:
        rgb: uint8 (S, S, 3) or (N, S, S, 3) crop(s).
        fov_mask: bool (S, S) or (N, S, S).
        method: ``per_image`` (DESIGN.md §2.2: subtract the mean, divide by the standard deviation, both over
            all FOV pixels and channels) or ``local_contrast`` (Ben Graham's ``4*img - 4*blur + 128``, then the same
            standardisation) or ``scale_127`` (a fixed ``(rgb - 127) / 128``, the input scaling of the ImageNet
            EfficientNet-Lite weights; no per-image statistics).

    Returns:
        float32 array of the same shape; 0 outside the FOV.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"Unknown normalisation {method!r}; use one of {', '.join(NORMALISATIONS)}.")
    if rgb.ndim == 4:
        return np.stack([standardise(r, m, method) for r, m in zip(rgb, fov_mask)])
    x = rgb.astype(np.float32)
    if method == "scale_127":
        offset, scale = SCALE_127
        x -= offset
        x *= (1.0 / scale) * fov_mask[..., None]
        return x
    if method == "local_contrast":
        sigma = rgb.shape[0] * LOCAL_CONTRAST_SIGMA_FRACTION
        x = np.clip(4.0 * x - 4.0 * cv2.GaussianBlur(x, (0, 0), sigma) + 128.0, 0, 255)
    mask8 = fov_mask.view(np.uint8) if fov_mask.dtype == bool else fov_mask.astype(np.uint8)
    if not mask8.any():
        return np.zeros_like(x)
    # Per-channel moments from OpenCV (5x faster than boolean indexing at 512 px), pooled over the channels.
    ch_mean, ch_std = (v.ravel() for v in cv2.meanStdDev(x, mask=mask8))
    mean = float(ch_mean.mean())
    std = max(float(np.sqrt(max((ch_std**2 + ch_mean**2).mean() - mean * mean, 0.0))), STD_FLOOR)
    x -= mean
    x *= (1.0 / std) * fov_mask[..., None]
    return x


def preprocess(
    rgb: np.ndarray, size: int = DEFAULT_SIZE, method: str = "per_image", label: str = "the photograph"
) -> PreprocessedImage:
    """Photograph -> model input, FOV mask and the geometry back to the photograph.

    Args:
        rgb: uint8 RGB photograph (H, W, 3), e.g. from :func:`device.imageio.load_image`.
        size: model input size in pixels.
        method: normalisation, see :func:`standardise`.
        label: how to name the image in error messages.

    Raises:
        ImageTooSmallError, BlankImageError, NotFundusError: with a one-sentence message.
    """
    check_size(rgb, label)
    fov = find_fov(rgb, label)
    crop, mask, geometry = crop_to_fov(rgb, fov, size)
    return PreprocessedImage(rgb=crop, fov_mask=mask, image=standardise(crop, mask, method), geometry=geometry, fov=fov)


def preprocess_file(path: str | Path, size: int = DEFAULT_SIZE, method: str = "per_image") -> PreprocessedImage:
    """Load and preprocess one photograph file (errors name the file)."""
    return preprocess(load_image(path), size=size, method=method, label=Path(path).name)

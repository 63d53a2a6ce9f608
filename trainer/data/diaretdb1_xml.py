"""DiaretDB1 v2.1 expert XMLs: parse the markings and rasterise them into fused maps (fallback and cross-check).

Each ``groundtruth/diaretdb1_imageNNN_0E_plain.xml`` (expert E = 1..4) lists ``<marking>`` elements with one region
(``circleregion``: centroid + radius; ``ellipseregion``: centroid, x and y radius, angle in degrees;
``polygonregion``: centroid then a closed vertex ring), a ``representativepoint``, a ``confidencelevel``
(High/Medium/Low = 3/2/1) and a ``markingtype``. ``coords2d`` is ``"x,y"``, x = column, 1-based (DESIGN.md §3).

The fused map is rebuilt like the v1.1 one: per expert and lesion type, each pixel takes the highest confidence
level of the markings covering it; the four experts' levels are summed and multiplied by 21 (0..252). Three
rasterisation details, found on the real maps, make the rebuilt maps match the shipped ones (pixel-pooled IoU of the
75 % masks over all 89 images: haemorrhages 0.997, hard exudates 0.998, soft exudates 0.995, red small dots 1.000;
a plain OpenCV rasterisation gives 0.93 / 0.94 / 0.95 / 0.33): a pixel is covered when the one-pixel-tall vertical
segment through its centre meets the region; the tool's default radius-5 circles are drawn with radius 3; ellipse
angles turn counter-clockwise on screen.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer.data.diaretdb1_layout import CONFIDENCE_LEVELS, FUSED_STEP, LESION_TYPES, N_EXPERTS, XML_MARKING_TYPES
from trainer.data.eyepacs import DatasetError

# Rasterisation details measured on the real v1.1 maps (see marking_mask).
DEFAULT_MARKER_RADIUS = 5.0  # the annotation tool's default circle ...
FUSED_MARKER_RADIUS = 3.0  # ... is drawn with this radius in the v1.1 fused maps
SUPERSAMPLE = 8  # polygon rows are filled at 8x vertical resolution
ANGLE_SIGN = -1.0  # <angle> (degrees) turns counter-clockwise on screen (y down): IoU 0.93 -> 0.997 on the real maps


@dataclass(frozen=True)
class Marking:
    """One expert marking, in 0-based pixel coordinates (x = column, y = row)."""

    lesion_type: str  # canonical name (LESION_TYPES)
    confidence: int  # 1 Low, 2 Medium, 3 High
    shape: str  # "circle", "ellipse" or "polygon"
    centre: tuple[float, float]
    radii: tuple[float, float] = (0.0, 0.0)  # circle: (r, r); ellipse: (x radius, y radius)
    angle: float = 0.0  # ellipse rotation in degrees
    vertices: tuple[tuple[float, float], ...] = ()  # polygon ring


def _xy(element: ET.Element | None, path: Path) -> tuple[float, float]:
    """0-based (x, y) from a ``coords2d`` element holding 1-based ``"x,y"``."""
    try:
        x, y = element.text.split(",")  # type: ignore[union-attr]
        return float(x) - 1.0, float(y) - 1.0
    except (AttributeError, ValueError) as exc:
        raise DatasetError(
            f"The DiaretDB1 annotation {path} has a malformed coordinate; replace the file with the original.") from exc


def parse_expert_xml(path: str | Path) -> list[Marking]:
    """Markings of the four lesion types in one expert's XML file (other types are skipped).

    Args:
        path: a ``diaretdb1_imageNNN_0E[_plain].xml`` file.

    Returns:
        The markings in file order.

    Raises:
        DatasetError: the file is missing or not a DiaretDB1 annotation.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(
            f"The DiaretDB1 annotation {path} is missing or not valid XML; restore it from the original "
            "release.") from exc
    markings: list[Marking] = []
    for node in root.iter("marking"):
        lesion_type = XML_MARKING_TYPES.get((node.findtext("markingtype") or "").strip())
        if lesion_type is None:
            continue
        level = CONFIDENCE_LEVELS.get((node.findtext("confidencelevel") or "").strip())
        if level is None:
            raise DatasetError(
                f"A marking in {path} has no High/Medium/Low confidence level; restore the file from the original "
                "release.")
        if (region := node.find("circleregion")) is not None:
            r = float(region.findtext("radius", "0"))
            markings.append(Marking(lesion_type, level, "circle", _xy(region.find("centroid/coords2d"), path), (r, r)))
        elif (region := node.find("ellipseregion")) is not None:
            radii = {el.get("direction"): float(el.text or 0) for el in region.findall("radius")}
            markings.append(Marking(lesion_type, level, "ellipse", _xy(region.find("centroid/coords2d"), path),
                                    (radii.get("x", 0.0), radii.get("y", 0.0)), float(region.findtext("angle", "0"))))
        elif (region := node.find("polygonregion")) is not None:
            ring = tuple(_xy(el, path) for el in region.findall("coords2d"))  # direct children: the vertices
            markings.append(Marking(lesion_type, level, "polygon", _xy(region.find("centroid/coords2d"), path),
                                    vertices=ring))
    return markings


def _segment_hits_ellipse(marking: Marking, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """True where the vertical segment {x} x [y - 0.5, y + 0.5] of a pixel meets the (rotated) ellipse."""
    a, b = max(marking.radii[0], 1e-6), max(marking.radii[1], 1e-6)
    t = math.radians(marking.angle * ANGLE_SIGN)
    c, s = math.cos(t), math.sin(t)
    qa, qb, qc = c * c / a**2 + s * s / b**2, c * s * (1 / a**2 - 1 / b**2), s * s / a**2 + c * c / b**2
    dx, dy = xs - marking.centre[0], ys - marking.centre[1]
    y_best = np.clip(-qb * dx / qc, dy - 0.5, dy + 0.5)  # minimiser of the quadratic form along the segment
    return qa * dx * dx + 2 * qb * dx * y_best + qc * y_best * y_best <= 1.0 + 1e-9


def marking_mask(marking: Marking, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels covered by one marking, inside its bounding box.

    The v1.1 fused maps were rasterised column by column: a pixel is covered when the vertical segment through its
    centre, one pixel tall, meets the region (checked on the real maps: isolated circles of radius r cover exactly
    the pixels with ``dx^2 + max(|dy| - 0.5, 0)^2 <= r^2``). Circles of radius 5, the annotation tool's default
    marker, appear in the fused maps with radius 3 (all 603 isolated ones).

    Returns:
        ((row slice, column slice), bool patch), or None when the marking lies outside the image.
    """
    if marking.shape == "polygon":
        v = np.array(marking.vertices, np.float64)
        if len(v) < 3:
            return None
        x0, x1 = int(math.floor(v[:, 0].min())), int(math.ceil(v[:, 0].max()))
        y0, y1 = int(math.floor(v[:, 1].min())) - 1, int(math.ceil(v[:, 1].max())) + 1
    else:
        if marking.shape == "circle" and marking.radii[0] == DEFAULT_MARKER_RADIUS:
            marking = Marking(marking.lesion_type, marking.confidence, "circle", marking.centre,
                              (FUSED_MARKER_RADIUS, FUSED_MARKER_RADIUS))
        reach = max(marking.radii) + 1
        x0, x1 = int(math.floor(marking.centre[0] - reach)), int(math.ceil(marking.centre[0] + reach))
        y0, y1 = int(math.floor(marking.centre[1] - reach)), int(math.ceil(marking.centre[1] + reach))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1] - 1), min(y1, shape[0] - 1)
    if x1 < x0 or y1 < y0:
        return None
    if marking.shape == "polygon":
        # fill at SUPERSAMPLE x the row resolution, then a pixel is covered when any fine row of its height is
        fine = np.zeros(((y1 - y0 + 1) * SUPERSAMPLE, x1 - x0 + 1), np.uint8)
        pts = np.stack([v[:, 0] - x0, (v[:, 1] - y0 + 0.5) * SUPERSAMPLE - 0.5], axis=1)
        cv2.fillPoly(fine, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, 4)
        patch = fine.reshape(y1 - y0 + 1, SUPERSAMPLE, -1).any(axis=1)
    else:
        ys, xs = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float64)
        patch = _segment_hits_ellipse(marking, xs, ys)
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), patch


def expert_level_maps(markings: list[Marking], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """One expert's confidence level per pixel and lesion type: the highest level of the markings covering it.

    Args:
        markings: one expert's markings.
        shape: (height, width) of the image.

    Returns:
        {lesion type: uint8 (H, W) with values 0..3}.
    """
    maps = {t: np.zeros(shape, np.uint8) for t in LESION_TYPES}
    for marking in markings:
        covered = marking_mask(marking, shape)
        if covered is not None:
            where, patch = covered
            region = maps[marking.lesion_type][where]
            np.maximum(region, patch.astype(np.uint8) * np.uint8(marking.confidence), out=region)
    return maps


def expert_xml_paths(xml_dir: str | Path, image_id: str) -> list[Path]:
    """The four experts' XML files of ``image_id`` (``_plain`` preferred), in expert order."""
    xml_dir = Path(xml_dir)
    paths = []
    for expert in range(1, N_EXPERTS + 1):
        plain = xml_dir / f"diaretdb1_{image_id}_{expert:02d}_plain.xml"
        paths.append(plain if plain.exists() else xml_dir / f"diaretdb1_{image_id}_{expert:02d}.xml")
    return paths


def rebuild_fused_maps(xml_dir: str | Path, image_id: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Fused maps of one image rebuilt from the four experts' XMLs, in the v1.1 encoding.

    Args:
        xml_dir: the v2.1 ``groundtruth/`` folder.
        image_id: e.g. ``"image001"``.
        shape: (height, width) of the image (1152, 1500 for DiaretDB1).

    Returns:
        {lesion type: uint8 (H, W)}, ``21 x`` the sum over experts of their level (0..252).

    Raises:
        DatasetError: an expert's file is missing or malformed.
    """
    total = {t: np.zeros(shape, np.uint16) for t in LESION_TYPES}
    for path in expert_xml_paths(xml_dir, image_id):
        for t, levels in expert_level_maps(parse_expert_xml(path), shape).items():
            total[t] += levels
    return {t: (v * FUSED_STEP).astype(np.uint8) for t, v in total.items()}


def marking_area(marking: Marking) -> float:
    """Nominal area of a marking in square pixels (for summaries)."""
    if marking.shape in ("circle", "ellipse"):
        return math.pi * marking.radii[0] * marking.radii[1]
    v = np.array(marking.vertices)
    return float(abs(np.dot(v[:, 0], np.roll(v[:, 1], 1)) - np.dot(v[:, 1], np.roll(v[:, 0], 1))) / 2)

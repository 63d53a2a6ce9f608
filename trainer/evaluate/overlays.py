"""Overlays like the paper's Fig. 2: the photograph with the expert ground truth of each lesion type, and the CAM
heat map over the photograph with the proposed regions outlined against the same ground truth, with a legend.

Outlines are drawn with OpenCV on a downscaled copy (tiny red dots are kept by area interpolation before the
contour is traced); matplotlib only lays out the two panels, the title and the legend.
"""

from __future__ import annotations

import io

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from device.model.card import CLASS_NAMES
from device.regions import propose_regions
from trainer.evaluate.config import EvaluationConfig

MAX_WIDTH = 900  # px per panel: enough to see red small dots, small enough to draw quickly
HEAT_ALPHA = 0.5  # opacity of the heat map at its maximum
HEAT_FLOOR = 0.15  # normalised heat below this is not tinted, so the retina stays readable
REGION_COLOUR = (255, 255, 255)
TYPE_COLOURS = {  # RGB, chosen to stay distinct over a jet colour map and a red-orange fundus
    "haemorrhages": (255, 0, 255),
    "hard_exudates": (255, 255, 0),
    "soft_exudates": (0, 255, 255),
    "red_small_dots": (0, 255, 0),
}
TYPE_LABELS = {"haemorrhages": "haemorrhages (GT)", "hard_exudates": "hard exudates (GT)",
               "soft_exudates": "soft exudates (GT)", "red_small_dots": "red small dots (GT)"}


def _outline(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    h, w = canvas.shape[:2]
    small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
    contours, _ = cv2.findContours(small.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(canvas, contours, -1, colour, thickness, lineType=cv2.LINE_AA)


def render_overlay(rgb: np.ndarray, heat: np.ndarray, lesion_masks: dict[str, np.ndarray],
                   config: EvaluationConfig | None = None, fov_mask: np.ndarray | None = None, title: str = "",
                   referable: bool | None = None) -> bytes:
    """Draw one image's overlay.

    Args:
        rgb: uint8 (H, W, 3) photograph.
        heat: float (H, W) CAM on the photograph (CAM units).
        lesion_masks: ``{type: bool (H, W)}`` ground truth.
        config: protocol (threshold, normalisation, connectivity); defaults to the paper's.
        fov_mask: bool (H, W) field of view (applied when ``config.restrict_to_fov``).
        title: figure title.
        referable: the classifier's decision, shown in the title.

    Returns:
        PNG bytes.
    """
    config = config or EvaluationConfig()
    mask = fov_mask if config.restrict_to_fov else None
    props = propose_regions(heat, threshold=config.region_threshold, connectivity=config.connectivity,
                            normalisation=config.normalisation, fixed_range=config.fixed_range, mask=mask,
                            min_area=config.min_region_area)
    h, w = rgb.shape[:2]
    scale = min(1.0, MAX_WIDTH / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    photo = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    heat01 = cv2.resize(props.heat, size, interpolation=cv2.INTER_AREA)
    colour = (plt.get_cmap("jet")(heat01)[..., :3] * 255).astype(np.float32)
    alpha = (np.clip((heat01 - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0, 1) * HEAT_ALPHA)[..., None]
    blended = (photo * (1 - alpha) + colour * alpha).astype(np.uint8)
    truth = photo.copy()
    _outline(blended, props.union_mask(), REGION_COLOUR, 3)  # regions first, so the thin GT stays visible on top
    for lesion_type, m in lesion_masks.items():
        col = TYPE_COLOURS.get(lesion_type, (255, 128, 0))
        _outline(truth, m, col, 2)
        _outline(blended, m, col, 1)

    fig, axes = plt.subplots(1, 2, figsize=(2 * size[0] / 100, size[1] / 100 + 1.1), dpi=100)
    axes[0].imshow(truth)
    axes[0].set_title("photograph with expert ground truth (>= 75 %)", fontsize=9)
    axes[1].imshow(blended)
    axes[1].set_title(f"CAM heat map, regions at {config.region_threshold:.2f} "
                      f"({len(props.regions)} regions)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    verdict = "" if referable is None else f"  → {CLASS_NAMES[int(bool(referable))]}"
    fig.suptitle(title + verdict, fontsize=10)
    handles = [Line2D([], [], color=np.array(REGION_COLOUR) / 255, lw=2, label="proposed region (white)")]
    handles += [Line2D([], [], color=np.array(c) / 255, lw=2, label=TYPE_LABELS[t]) for t, c in TYPE_COLOURS.items()]
    handles.append(Line2D([], [], color="red", lw=6, alpha=0.6, label="heat map (jet: blue low, red high)"))
    leg = fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=True)
    leg.get_frame().set_facecolor("0.85")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.91, bottom=0.12, wspace=0.02)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()

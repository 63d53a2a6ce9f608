"""Render the result screen as one RGB image: the same picture goes to the display and into the record.

Layout (any size; 800x480 is the Raspberry Pi 7" panel):

    ┌──────────────────────────────────────────────┐
    │ VERDICT IN WORDS, on the verdict colour       │  banner, ~20 % of the height: readable at arm's length
    ├───────────────────────┬──────────────────────┤
    │ photograph + heat-map │ probability, reasons, │
    │ overlay + region boxes│ NEXT: what to do      │
    ├───────────────────────┴──────────────────────┤
    │ Research tool — not a medical device · model │  notice strip
    └──────────────────────────────────────────────┘

Message screens (ready, busy, errors) use the same banner and notice, so an error is a screen with one sentence,
never a traceback.
"""

from __future__ import annotations

import textwrap
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from device.notice import RESEARCH_NOTICE
from device.result import NEXT_ACTION, ScreeningResult, Verdict

# Verdict colours (RGB): red / green / amber, the traffic-light convention of screening programmes; white text on
# each has a WCAG contrast ratio >= 4.5 (red 5.9, green 5.0, amber with dark text 8.6).
COLOURS = {"referable": (190, 30, 35), "non_referable": (25, 120, 55), "ungradable": (245, 170, 30),
           "info": (40, 70, 120), "error": (110, 20, 90)}
TEXT_ON = {"ungradable": (20, 20, 20)}
HEADLINES = {"referable": "REFER", "non_referable": "NO REFERRAL", "ungradable": "RETAKE PHOTO",
             "ungradable_final": "UNGRADABLE — REFER"}
BANNER_FRACTION = 0.22  # of the screen height
NOTICE_FRACTION = 0.08
HEAT_ALPHA = 0.45  # weight of the colour-mapped heat map over the photograph
HEAT_FLOOR = 0.25  # heat below this (normalised CAM) is not drawn, so healthy retina stays visible
# Bold sans fonts with the em dash; Raspberry Pi OS and Debian ship DejaVu (fonts-dejavu-core).
FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
              "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf")


@lru_cache(maxsize=32)
def _font(px: int) -> tuple[ImageFont.FreeTypeFont, bool]:
    """A bold font of ``px`` pixels and whether it has non-ASCII glyphs (Pillow's own font lacks the em dash)."""
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, px), True
    return ImageFont.load_default(size=px), False


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, px: int, fill) -> int:
    """Draw text; returns the y below it."""
    font, unicode_ok = _font(max(8, int(px)))
    if not unicode_ok:
        text = text.replace("—", "-").replace("→", "->").replace("·", "|")
    draw.text(xy, text, font=font, fill=fill)
    return xy[1] + int(px * 1.25)


def _wrap(draw, xy, text: str, px: int, width_px: int, fill, max_lines: int = 4) -> int:
    """Draw text wrapped to ``width_px``; returns the y below it."""
    chars = max(8, int(width_px / (px * 0.58)))
    x, y = xy
    for line in textwrap.wrap(text, chars)[:max_lines]:
        y = _text(draw, (x, y), line, px, fill)
    return y


def _frame(width: int, height: int, kind: str, headline: str, sub: str, footer: str):
    """Canvas with banner and notice; returns (PIL image, draw, body top, body bottom)."""
    img = Image.new("RGB", (width, height), (18, 18, 22))
    draw = ImageDraw.Draw(img)
    bh, nh = int(height * BANNER_FRACTION), int(height * NOTICE_FRACTION)
    colour, ink = COLOURS[kind], TEXT_ON.get(kind, (255, 255, 255))
    draw.rectangle((0, 0, width, bh), fill=colour)
    big = int(bh * 0.52)
    _text(draw, (int(width * 0.025), int(bh * 0.08)), headline, big, ink)
    if sub:
        _text(draw, (int(width * 0.025), int(bh * 0.08) + int(big * 1.15)), sub, int(bh * 0.2), ink)
    draw.rectangle((0, height - nh, width, height), fill=(0, 0, 0))
    notice = f"{RESEARCH_NOTICE} · {footer}" if footer else RESEARCH_NOTICE
    _text(draw, (int(width * 0.02), height - nh + int(nh * 0.2)), notice, int(nh * 0.5), (235, 235, 235))
    return img, draw, bh, height - nh


def overlay(photo: np.ndarray, result: ScreeningResult, width: int, height: int) -> np.ndarray:
    """The photograph fitted into width x height with the heat map and region boxes drawn on it.

    Args:
        photo: the original RGB photograph.
        result: its screening result (heat map and regions in original pixels).
        width, height: the box to fit into, pixels.

    Returns:
        uint8 RGB image of the fitted photograph (aspect ratio kept; at most width x height).
    """
    h0, w0 = photo.shape[:2]
    k = min(width / w0, height / h0)
    w, h = max(1, int(w0 * k)), max(1, int(h0 * k))
    small = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    if result.heatmap is not None and result.verdict is not Verdict.UNGRADABLE:
        heat = np.clip(result.heatmap.on_photo(w, h), 0, 1)
        colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        blended = cv2.addWeighted(small, 1 - HEAT_ALPHA, np.ascontiguousarray(colour), HEAT_ALPHA, 0)
        small = np.where((heat >= HEAT_FLOOR)[..., None], blended, small)
    for r in result.regions:
        p0 = (int(r.x * k), int(r.y * k))
        p1 = (int((r.x + r.w) * k), int((r.y + r.h) * k))
        cv2.rectangle(small, p0, p1, (255, 255, 255), max(1, w // 300), lineType=cv2.LINE_AA)
    return small


def render_result(result: ScreeningResult, photo: np.ndarray, size: tuple[int, int] = (800, 480),
                  title: str = "") -> np.ndarray:
    """Render the result screen.

    Args:
        result: the screening result.
        photo: the original RGB photograph the result is about.
        size: (width, height) of the screen, pixels.
        title: who/which eye, e.g. "Patient P001 · right eye".

    Returns:
        uint8 RGB (height, width, 3).
    """
    width, height = size
    kind = result.verdict.value
    key = "ungradable_final" if kind == "ungradable" and result.final else kind
    prob = "—" if result.probability is None else f"{100 * result.probability:.0f} %"
    sub = title or ""
    img, draw, top, bottom = _frame(width, height, kind, HEADLINES[key], sub, result.model_id)
    pad = int(width * 0.02)
    left_w = int(width * 0.55)
    pic = overlay(photo, result, left_w - 2 * pad, bottom - top - 2 * pad)
    img.paste(Image.fromarray(pic), (pad, top + pad))
    x, y = left_w + pad, top + pad
    px = max(10, int(height * 0.04))
    avail = width - x - pad
    if result.verdict is Verdict.UNGRADABLE:
        # The model's probability on an ungradable photograph is not used, so it is not shown (JSON keeps it).
        for reason in result.quality.reasons[:3]:
            y = _wrap(draw, (x, y), f"• {reason}", px, avail, (250, 200, 90), 3)
    else:
        # The model's output is a score, not a calibrated probability: show it beside the card's cut-off, so
        # "82 %" under NO REFERRAL (cut-off 83 %) is not misread.
        y = _wrap(draw, (x, y), f"Referable-DR score: {prob} (refer at {100 * result.threshold:.0f} % or more)",
                  px, avail, (235, 235, 235), 3)
        if result.regions:
            y = _wrap(draw, (x, y), f"{len(result.regions)} suspicious region(s) boxed", px, avail,
                      (235, 235, 235), 2)
    y += px // 2
    _wrap(draw, (x, y), f"NEXT: {result.next_action}", int(px * 1.2), avail, (255, 255, 255), 4)
    return np.asarray(img)


def render_patient(patient_id: str, verdict: Verdict, eyes: dict[str, ScreeningResult],
                   size: tuple[int, int] = (800, 480), footer: str = "") -> np.ndarray:
    """Render the per-patient summary (both eyes): referable if either eye is referable or ungradable.

    Args:
        patient_id: the patient's id.
        verdict: the combined verdict (``device.result.patient_verdict``).
        eyes: eye name -> its last result.
        size: (width, height), pixels.
        footer: appended to the notice strip.
    """
    words = {"referable": "referable DR", "non_referable": "no referable DR"}
    lines = []
    for eye, r in eyes.items():
        what = "ungradable after retakes" if r.verdict is Verdict.UNGRADABLE else words[r.verdict.value]
        lines.append(f"{eye.capitalize()} eye: {what}.")
    action = NEXT_ACTION[verdict.value] if verdict is not Verdict.UNGRADABLE else NEXT_ACTION["ungradable_final"]
    headline = f"{patient_id}: " + ("REFER" if verdict is Verdict.REFERABLE else "NO REFERRAL")
    return render_message(headline, " ".join(lines) + " " + action, verdict.value, size, footer)


def render_message(headline: str, message: str, kind: str = "info", size: tuple[int, int] = (800, 480),
                   footer: str = "") -> np.ndarray:
    """Render a message screen (ready, busy, retake prompt, error).

    Args:
        headline: a few words for the banner.
        message: one or two sentences (wrapped).
        kind: colour key: ``info``, ``error``, or a verdict value.
        size: (width, height), pixels.
        footer: appended to the notice strip (e.g. the model id).

    Returns:
        uint8 RGB (height, width, 3).
    """
    width, height = size
    img, draw, top, _ = _frame(width, height, kind, headline, "", footer)
    pad = int(width * 0.04)
    _wrap(draw, (pad, top + pad), message, max(12, int(height * 0.065)), width - 2 * pad, (240, 240, 240), 5)
    return np.asarray(img)

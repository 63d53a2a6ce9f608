"""The referral letter of one visit: what was found in which eye, where to go, the research-tool notice.

:func:`build_letter` gathers the facts once; the HTML page (print CSS for A4 and A5) and :func:`letter_pdf`
(fpdf2, pure Python) both lay out the same :class:`Letter`, so the printout and the PDF cannot disagree.

    letter = build_letter(reader, "P0002", session_id, console_cfg)
    pdf_bytes = letter_pdf(letter, "A5")
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from device.console.config import ConsoleConfig
from device.console.store import RecordReader, group_visits, local_time
from device.console.unit_status import model_for
from device.notice import INTENDED_USE as LONG_NOTICE
from device.result import NEXT_ACTION

# Regular and bold DejaVu Sans (Debian / Raspberry Pi OS: fonts-dejavu-core); Helvetica (Latin-1 only) otherwise.
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
MARGIN_MM = {"A4": 18, "A5": 12}
TEXT_MM = {"A4": 5.2, "A5": 4.4}  # line height
SCREEN_MM = {"A4": 82, "A5": 60}  # printed width of each eye's result screen


@dataclass(frozen=True)
class EyeFinding:
    """One eye's outcome at the visit (its last photograph decides)."""

    eye: str
    key: str  # referable / non_referable / ungradable / ungradable_final / not_screened
    refer: bool
    sentence: str
    record_id: str | None = None
    screen_path: str | None = None
    screen_sha256: str | None = None


@dataclass(frozen=True)
class Letter:
    """Everything a referral letter says."""

    clinic: str
    contact: str
    patient_id: str
    session_id: str
    visit_at: str
    operator: str
    refer: bool
    title: str
    action: str
    refer_to: str
    eyes: tuple[EyeFinding, ...]
    model: dict
    notice: str = LONG_NOTICE
    referred_eyes: tuple[str, ...] = field(default=())


def _finding(eye: str, row: dict | None, attempts: int, cutoff: float | None) -> EyeFinding:
    if row is None:
        return EyeFinding(eye, "not_screened", False, "Not screened at this visit.")
    p = row["probability"]
    score = "" if p is None else (f" (score {p:.2f}, cut-off {cutoff:.2f})" if cutoff is not None
                                  else f" (score {p:.2f})")
    if row["verdict"] == "referable":
        n = len(row["regions"])
        where = f"; {n} suspicious region{'s' if n != 1 else ''} marked on the photograph" if n else ""
        text, key, refer = f"Referable diabetic retinopathy suspected{score}{where}.", "referable", True
    elif row["verdict"] == "non_referable":
        text, key, refer = f"No referable diabetic retinopathy found{score}.", "non_referable", False
    else:
        reasons = "; ".join(row["reasons"]) or "quality check failed"
        final = bool(row["final"])
        text = (f"Photograph could not be graded after {attempts} attempt{'s' if attempts != 1 else ''} "
                f"({reasons}){': refer for examination' if final else ': a retake was still pending'}.")
        key, refer = ("ungradable_final" if final else "ungradable"), final
    return EyeFinding(eye, key, refer, text, row["id"], row["screen_path"], row["screen_sha256"])


def build_letter(reader: RecordReader, patient_id: str, session_id: str | None, cfg: ConsoleConfig) -> Letter | None:
    """The letter for one visit of a patient (default: the latest), or None when there is no such visit."""
    rows = reader.patient(patient_id)
    visits = group_visits(rows)
    visit = next((v for v in visits if v.session_id == session_id), None) if session_id else (
        visits[0] if visits else None)
    if visit is None:
        return None
    recorded = reader.session_models([visit.session_id]).get(visit.session_id, {})
    models = {r["model_id"] for r in visit.eyes.values()}
    model = model_for(sorted(models)[0], recorded) if models else {}
    eyes = []
    for eye in ("right", "left"):
        tries = sum(1 for r in rows if r["session_id"] == visit.session_id and r["eye"] == eye)
        eyes.append(_finding(eye, visit.eyes.get(eye), tries, model.get("decision_threshold")))
    refer = any(e.refer for e in eyes)
    incomplete = visit.verdict == "incomplete"
    action = (NEXT_ACTION["referable"] if refer else
              "Screening incomplete: a photograph still needs a retake." if incomplete else
              NEXT_ACTION["non_referable"])
    return Letter(cfg.clinic_name, cfg.clinic_contact, patient_id, visit.session_id,
                  local_time(visit.last_at).strftime("%Y-%m-%d %H:%M"), visit.operator, refer,
                  "Referral to an eye specialist" if refer else "Diabetic retinopathy screening result", action,
                  cfg.refer_to, tuple(eyes), model, referred_eyes=tuple(e.eye for e in eyes if e.refer))


def _fonts(pdf) -> tuple[str, bool]:
    """Register DejaVu Sans if installed; returns (family, unicode_ok)."""
    for folder in FONT_DIRS:
        regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
        if regular.is_file() and bold.is_file():
            pdf.add_font("DejaVu", "", str(regular))
            pdf.add_font("DejaVu", "B", str(bold))
            return "DejaVu", True
    return "Helvetica", False


def letter_pdf(letter: Letter, paper: str, screens: dict[str, Path]) -> bytes:
    """The letter as a PDF on A4 or A5.

    Args:
        letter: from :func:`build_letter`.
        paper: "A4" or "A5".
        screens: eye -> result-screen PNG to print (already checked to lie in the records and match its sha256).
    """
    from fpdf import FPDF  # imported on the first PDF: it is half the console's memory (fontTools)
    from fpdf.enums import XPos, YPos

    with warnings.catch_warnings():  # fpdf2 2.8.5+ notes that it corrected its A5 size: nothing to do
        warnings.simplefilter("ignore", UserWarning)
        pdf = FPDF(format=paper)
    margin, lh = MARGIN_MM[paper], TEXT_MM[paper]
    pdf.set_margins(margin, margin)
    pdf.set_auto_page_break(True, margin)
    pdf.set_title(f"{letter.title} - {letter.patient_id}")
    pdf.set_creator("dr-cam-screening console (research tool, not a medical device)")
    pdf.add_page()
    family, unicode_ok = _fonts(pdf)
    small = 8 if paper == "A5" else 9

    def text(s: str, size: float, bold: bool = False, gap: float = 0) -> None:
        if not unicode_ok:
            s = s.replace("—", "-").encode("latin-1", "replace").decode("latin-1")
        pdf.set_font(family, "B" if bold else "", size)
        pdf.multi_cell(0, lh * size / 10, s, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if gap:
            pdf.ln(gap)

    text(letter.notice, small + 1, True, gap=3)
    text(letter.clinic, 14, True)
    if letter.contact:
        text(letter.contact, small + 1)
    pdf.ln(2)
    text(letter.title, 13, True, gap=1)
    text(f"Patient: {letter.patient_id}    Screened: {letter.visit_at}    Operator: {letter.operator}", 10)
    text(f"Visit: {letter.session_id}", small, gap=3)
    for finding in letter.eyes:
        text(f"{finding.eye.capitalize()} eye", 11, True)
        text(finding.sentence, 10, gap=2)
    text("What to do", 11, True)
    text(letter.action, 10)
    if letter.refer:
        text(f"Referred because of the {' and '.join(letter.referred_eyes)} eye"
             f"{'s' if len(letter.referred_eyes) > 1 else ''}. Please go to: {letter.refer_to}", 10, True)
    pdf.ln(2)
    if screens:
        width = SCREEN_MM[paper]
        y = pdf.get_y()
        for i, (eye, path) in enumerate(screens.items()):
            x = margin + i * (width + 4)
            if i and x + width > pdf.w - margin:  # one per row when two do not fit
                x, y = margin, y + width * 0.6 + 8
            pdf.set_font(family, "", small)
            pdf.set_xy(x, y)
            pdf.cell(width, 4, f"{eye} eye: result screen (heat map and regions)")
            pdf.image(str(path), x=x, y=y + 4.5, w=width)
        pdf.set_y(y + width * 0.6 + 8)
    m = letter.model
    text(f"Model {m.get('id')} (sha256 {str(m.get('sha256') or 'not recorded')[:16]}...). Automated result, to be "
         "confirmed by a qualified grader.", small, gap=4)
    text("Examined by: ______________________   Date: ____________   Signature: ______________", 10)
    return bytes(pdf.output())

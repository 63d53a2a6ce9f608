"""Downloads: CSV and JSON of a date range, and the referral letter (printable page and PDF).

The CSV is :func:`device.records.screenings_csv` (one home for the columns and the spreadsheet-formula
neutralisation); every download is written to the console's access log with who asked for it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask, Response, abort, g, render_template, request

from device.atomic import sha256_file
from device.console.context import access_log, reader, settings
from device.console.referral import build_letter, letter_pdf
from device.console.store import day_bounds
from device.console.views import BadInput, image_file, parse_day
from device.notice import INTENDED_USE as LONG_NOTICE
from device.records import screenings_csv, visit_verdicts

MAX_RANGE_DAYS = 366
PAPERS = ("A4", "A5")


def _range() -> tuple:
    first = parse_day(request.args.get("from"))
    last = parse_day(request.args.get("to"), first)
    if last < first:
        raise BadInput("The end of the range is before its start: swap the two dates.")
    if last - first > timedelta(days=MAX_RANGE_DAYS):
        raise BadInput(f"Export at most {MAX_RANGE_DAYS} days at a time: shorten the range.")
    return first, last


def _download(body: bytes | str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)  # ids come from the records: never trust them in a header
    response.headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    return response


def _paper() -> str:
    paper = request.args.get("paper", settings().unit.console.paper).upper()
    if paper not in PAPERS:
        raise BadInput("The paper must be A4 or A5: pick one of the buttons.")
    return paper


def register(app: Flask) -> None:
    """Add the export and referral routes to the console app."""

    @app.get("/export")
    def export():
        first, last = _range()
        return render_template("export.html", first=first, last=last)

    @app.get("/export/screenings.<fmt>")
    def export_file(fmt: str):
        if fmt not in ("csv", "json"):
            abort(404)
        first, last = _range()
        r = reader()
        rows = r.between(*day_bounds(first, last), full=True)
        verdicts = visit_verdicts(rows)
        name = f"screenings_{first}_{last}.{fmt}"
        access_log().info("export user=%r file=%s rows=%d", g.user, name, len(rows))
        if fmt == "csv":
            return _download(screenings_csv(rows, verdicts), "text/csv", name)
        doc = {"notice": LONG_NOTICE, "clinic": settings().unit.console.clinic_name,
               "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
               "from": str(first), "to": str(last),
               "visits": [{"session_id": s, "patient_id": p, "verdict": v} for (s, p), v in verdicts.items()],
               "sessions": r.session_models(sorted({row["session_id"] for row in rows})),
               "screenings": rows}
        return _download(json.dumps(doc, indent=1), "application/json", name)

    def letter_or_404(patient_id: str):
        letter = build_letter(reader(), patient_id, request.args.get("session"), settings().unit.console)
        if letter is None:
            abort(404)
        return letter

    @app.get("/patient/<patient_id>/referral")
    def referral(patient_id: str):
        paper = _paper()
        return render_template("referral.html", letter=letter_or_404(patient_id), paper=paper, papers=PAPERS)

    @app.get("/patient/<patient_id>/referral.pdf")
    def referral_pdf(patient_id: str):
        paper = _paper()
        letter = letter_or_404(patient_id)
        screens: dict[str, Path] = {}
        for finding in letter.eyes:
            path = image_file(reader().folder, finding.screen_path) if finding.screen_path else None
            if path is not None and sha256_file(path) == finding.screen_sha256:
                screens[finding.eye] = path
        access_log().info("referral_pdf user=%r patient=%r session=%s", g.user, patient_id, letter.session_id)
        return _download(letter_pdf(letter, paper, screens), "application/pdf",
                         f"referral_{letter.patient_id}_{letter.session_id}_{paper}.pdf")

"""The console's pages: the day list, the patient search, the patient page, record images, the unit page.

Every handler reads through :func:`device.console.app.reader` (read-only, parameterised) and renders a Jinja
template (autoescaped). Bad input gets a 400 page with one sentence; an unknown patient or record a 404.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

from flask import Flask, abort, render_template, request, send_file
from PIL import Image

from device.atomic import sha256_file
from device.console.context import reader, settings
from device.console.store import day_bounds, group_visits, local_time
from device.console.unit_status import model_for, unit_status
from device.records import IMAGES_DIR
from device.screen_render import HEADLINES

PAGE_SIZE = 100  # visits per page of the day list
AUDIT_PAGE = 100
EYE_ORDER = ("right", "left")
VISIT_VERDICTS = ("referable", "non_referable", "incomplete")
VISIT_LABELS = {"referable": "REFER", "non_referable": "NO REFERRAL", "incomplete": "INCOMPLETE: retake pending"}
MAX_QUERY = 64  # characters of a patient-id search
IMAGE_KINDS = {"photo": ("photo_path", "photo_sha256", "image/jpeg"),
               "screen": ("screen_path", "screen_sha256", "image/png")}


class BadInput(Exception):
    """A query parameter a person typed or edited is not acceptable (``str`` is the sentence)."""


def verdict_key(row: dict) -> str:
    """The colour/label key of one screening: referable, non_referable, ungradable or ungradable_final."""
    return row["verdict"] + ("_final" if row["verdict"] == "ungradable" and row["final"] else "")


def parse_day(text: str | None, default: date | None = None) -> date:
    """A ``YYYY-MM-DD`` query parameter (default: today)."""
    if not text:
        return default or date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput("A day must be written like 2026-03-01 (year-month-day): correct the address.") from None


def parse_page() -> int:
    """The ``page`` query parameter (default 1)."""
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        page = 0
    if page < 1:
        raise BadInput("The page must be a number from 1: use the page links.")
    return page


def image_file(folder: Path, relative: str) -> Path | None:
    """The file a record names, only if it lies inside ``<folder>/images`` once every symlink is resolved."""
    root = (folder / IMAGES_DIR).resolve()
    try:
        path = (folder / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return path if path.is_relative_to(root) and path.is_file() else None


def register(app: Flask) -> None:
    """Add the pages to the console app."""
    app.add_template_filter(lambda iso: local_time(iso).strftime("%Y-%m-%d %H:%M"), "when")
    app.add_template_filter(lambda iso: local_time(iso).strftime("%H:%M:%S"), "clock")
    app.add_template_global(verdict_key)
    app.add_template_global(lambda key: HEADLINES.get(key) or VISIT_LABELS.get(key, key), "label")
    app.add_template_global(EYE_ORDER, "eye_order")

    @app.errorhandler(BadInput)
    def bad_input(exc):
        return render_template("error.html", title="Check the address", message=str(exc)), 400

    @app.get("/")
    def day():
        the_day = parse_day(request.args.get("day"))
        verdict = request.args.get("verdict", "")
        operator = request.args.get("operator", "")
        if verdict and verdict not in VISIT_VERDICTS:
            raise BadInput("The verdict filter must be referable, non_referable or incomplete: pick one from the "
                           "list.")
        page = parse_page()
        start, end = day_bounds(the_day)
        r = reader()
        visits = r.visits(start, end)
        counts = Counter(x.verdict for x in visits)  # the whole day's, whatever the filters
        eye_counts = Counter(verdict_key(row) for x in visits for row in x.eyes.values())
        shown = [x for x in visits if (not verdict or x.verdict == verdict) and
                 (not operator or x.operator == operator)]
        pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
        on_page = shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
        return render_template("day.html", day=the_day, prev_day=the_day - timedelta(days=1),
                               next_day=the_day + timedelta(days=1), today=date.today(), visits=on_page,
                               total=len(visits), counts=counts, eye_counts=dict(eye_counts), verdict=verdict,
                               operator=operator, operators=r.operators(start, end), page=page, pages=pages,
                               verdicts=VISIT_VERDICTS)

    @app.get("/search")
    def search():
        text = request.args.get("q", "").strip()
        if len(text) > MAX_QUERY:
            raise BadInput(f"A patient id has at most {MAX_QUERY} characters: shorten the search.")
        results = reader().search(text) if text else []
        return render_template("search.html", q=text, results=results)

    @app.get("/patient/<patient_id>")
    def patient(patient_id: str):
        r = reader()
        rows = r.patient(patient_id)
        if not rows:
            abort(404)
        visits = group_visits(rows)
        models = r.session_models([v.session_id for v in visits])
        attempts: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            attempts.setdefault((row["session_id"], row["eye"]), []).append(row)
        sizes = {row["id"]: _photo_size(r.folder, row["photo_path"]) for row in rows}
        cards = {row["model_id"]: model_for(row["model_id"], models.get(row["session_id"], {})) for row in rows}
        return render_template("patient.html", patient_id=patient_id, visits=visits, attempts=attempts,
                               models=models, sizes=sizes, cards=cards)

    @app.get("/image/<record_id>/<kind>")
    def image(record_id: str, kind: str):
        if kind not in IMAGE_KINDS or len(record_id) > 64:
            abort(404)
        row = reader().record(record_id)
        if row is None:
            abort(404)
        column, sha_column, mimetype = IMAGE_KINDS[kind]
        path = image_file(reader().folder, row[column])
        if path is None:
            abort(404)
        if sha256_file(path) != row[sha_column]:
            return render_template("error.html", title="Image altered",
                                   message="This image no longer matches the sha256 in its record: it was changed "
                                           "after screening; report it to the programme."), 409
        return send_file(path, mimetype=mimetype, max_age=0)

    @app.get("/unit")
    def unit():
        s = settings()
        return render_template("unit.html", status=unit_status(reader(), s))

    @app.get("/audit")
    def audit():
        page = parse_page()
        r = reader()
        pages = max(1, math.ceil(r.audit_count() / AUDIT_PAGE))
        events = r.audit(AUDIT_PAGE, (page - 1) * AUDIT_PAGE)
        return render_template("audit.html", events=events, page=page, pages=pages)


def _photo_size(folder: Path, relative: str) -> tuple[int, int] | None:
    """(width, height) of a recorded photograph from its header, for the region overlay; None if unreadable."""
    path = image_file(folder, relative)
    if path is None:
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None

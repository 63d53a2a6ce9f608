"""Every page logged in: what it shows, 404s, bad input, path traversal and SQL injection."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
from datetime import date, timedelta

import numpy as np
import pytest

from device.console.store import RecordReader, day_bounds
from device.console.synthetic import result
from device.records import RecordStore
from tests.device.console.conftest import ODD_IDS


def text(response) -> str:
    return response.get_data(as_text=True)


def today_visits(records):
    with RecordReader(records) as r:
        return r.visits(*day_bounds(date.today()))


def test_day_list_newest_first_with_counts_and_notice(client, records):
    visits = today_visits(records)
    html = text(client.get("/"))
    assert "Research tool — not a medical device" in html and "(today)" in html
    positions = [html.index(f">{v.patient_id}<") for v in visits if v.patient_id.startswith("P")]
    assert positions == sorted(positions)  # newest visit first
    n_ref = sum(v.verdict == "referable" for v in visits)
    assert f"REFER: {n_ref}<" in html
    assert f"<strong>{len(visits)}</strong> patient visit" in html


def test_day_list_filters_by_day_verdict_and_operator(client, records):
    yesterday = date.today() - timedelta(days=1)
    with RecordReader(records) as r:
        visits = r.visits(*day_bounds(yesterday))
    html = text(client.get(f"/?day={yesterday}"))
    assert all(f">{v.patient_id}<" in html for v in visits)
    referable = [v for v in visits if v.verdict == "referable"]
    html = text(client.get(f"/?day={yesterday}&verdict=referable"))
    assert all(f">{v.patient_id}<" in html for v in referable)
    assert not any(f">{v.patient_id}<" in html for v in visits if v.verdict != "referable")
    op = visits[0].operator
    html = text(client.get(f"/?day={yesterday}&operator={op}"))
    assert all((f">{v.patient_id}<" in html) == (v.operator == op) for v in visits)
    assert "No screenings" in text(client.get("/?day=2001-01-01"))


@pytest.mark.parametrize("url, words", [("/?day=2026-13-45", "year-month-day"), ("/?day=yesterday", "year-month"),
                                        ("/?verdict=maybe", "verdict filter"), ("/?page=0", "page"),
                                        ("/?page=abc", "page"), ("/audit?page=-1", "page"),
                                        ("/search?q=" + "x" * 65, "at most 64"),
                                        ("/export?from=2026-02-02&to=2026-02-01", "swap"),
                                        ("/export/screenings.csv?from=2020-01-01&to=2022-01-01", "366"),
                                        ("/patient/P00001/referral?paper=A3", "A4 or A5")])
def test_bad_input_is_a_400_with_one_sentence(client, url, words):
    r = client.get(url)
    assert r.status_code == 400 and words in text(r)
    assert "Traceback" not in text(r)


@pytest.mark.parametrize("url", ["/patient/NOBODY", "/patient/NOBODY/referral", "/patient/NOBODY/referral.pdf",
                                 "/patient/P00001/referral?session=not-a-session", "/image/deadbeef/photo",
                                 "/export/screenings.xml", "/static/nothing.css", "/nope"])
def test_unknown_things_are_404(client, url):
    r = client.get(url)
    assert r.status_code == 404
    if not url.startswith("/static/"):
        assert "no such page or record" in text(r)


def test_search_finds_by_part_of_the_id(client):
    html = text(client.get("/search?q=p0000"))  # case-insensitive, contains
    assert ">P00001<" in html and ">P00009<" in html and ">P00010<" not in html
    assert "No patient id contains" in text(client.get("/search?q=ZZZ"))


@pytest.mark.parametrize("q", ["' OR 1=1 --", "\" OR \"\"=\"", "'; DROP TABLE screenings; --", "%' --",
                               "P0%' UNION SELECT sql, 1, 1, 1 FROM sqlite_master --"])
def test_sql_injection_in_the_search_finds_nothing_and_changes_nothing(client, records, q):
    with RecordReader(records) as r:
        before = r.count()
    html = text(client.get("/search", query_string={"q": q}))
    assert "No patient id contains" in html and "CREATE TABLE" not in html
    with RecordReader(records) as r:
        assert r.count() == before


@pytest.mark.parametrize("q, want", [("%", "O&#39;Brien%_1"), ("_", "O&#39;Brien%_1"), ("'", "O&#39;Brien%_1")])
def test_like_wildcards_are_literal(client, q, want):
    html = text(client.get("/search", query_string={"q": q}))
    assert want in html and ">P00001<" not in html


def test_patient_page_shows_both_eyes_every_attempt_and_the_facts(client, records):
    with RecordReader(records) as r:
        rows = r.between("0", "9", full=True)
    retaken = next(x for x in rows if x["attempt"] == 2)
    pid = retaken["patient_id"]
    mine = [x for x in rows if x["patient_id"] == pid]
    html = text(client.get(f"/patient/{pid}"))
    assert "Right eye" in html and "Left eye" in html
    for x in mine:  # every attempt: both images, the photograph's sha256
        assert f"/image/{x['id']}/photo" in html and f"/image/{x['id']}/screen" in html
        assert x["photo_sha256"] in html
    assert "too dark — check the flash" in html  # the gate's reason
    assert "cut-off 0.600" in html and "0" * 64 in html and "recorded at the session" in html
    assert "inference 160.0 ms" in html
    ref = next(x for x in rows if x["verdict"] == "referable")
    html = text(client.get(f"/patient/{ref['patient_id']}"))
    assert '<rect class="region" x="4" y="5" width="8" height="7">' in html  # regions over the photograph
    assert "at or above: referable" in html


def test_images_are_served_from_the_records_and_checked(client, records):
    with RecordReader(records) as r:
        row = r.between("0", "9", full=True)[0]
    photo = client.get(f"/image/{row['id']}/photo")
    assert photo.status_code == 200 and photo.mimetype == "image/jpeg"
    assert photo.data == (records / row["photo_path"]).read_bytes()
    assert client.get(f"/image/{row['id']}/screen").mimetype == "image/png"
    assert client.get(f"/image/{row['id']}/records.sqlite").status_code == 404


def _insert_row(records, rid: str, photo_path: str, sha: str = "0" * 64) -> None:
    """A record as a tampered or buggy writer could leave it (inserted directly: the table is append-only)."""
    db = sqlite3.connect(records / "records.sqlite")
    cols = [c[1] for c in db.execute("PRAGMA table_info(screenings)")]
    row = {c: "x" for c in cols} | {"id": rid, "patient_id": "TAMPER", "attempt": 1, "final": 0, "gradable": 1,
                                    "probability": 0.1, "verdict": "non_referable", "reasons": "[]",
                                    "regions": "[]", "timings": "{}", "metrics": "{}", "photo_path": photo_path,
                                    "screen_path": photo_path, "photo_sha256": sha, "screen_sha256": sha,
                                    "captured_at": "2001-01-01T00:00:00.000+00:00"}
    with db:
        db.execute(f"INSERT INTO screenings ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [row[c] for c in cols])
    db.close()


def test_paths_outside_the_records_are_never_served(client, records, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not patient data")
    link = records / "images" / "link.jpg"
    os.symlink(secret, link)
    _insert_row(records, "t1", "../../../../../../etc/passwd")
    _insert_row(records, "t2", str(secret))  # absolute
    _insert_row(records, "t3", "images/link.jpg")  # a symlink inside images/ pointing outside
    _insert_row(records, "t4", "records.sqlite")  # inside the records folder but not an image
    for rid in ("t1", "t2", "t3", "t4"):
        r = client.get(f"/image/{rid}/photo")
        assert r.status_code == 404, rid
        assert b"root:" not in r.data and b"not patient data" not in r.data and b"SQLite" not in r.data
    for url in ("/image/..%2f..%2fetc%2fpasswd/photo", "/image/t1/..%2f..%2fetc%2fpasswd",
                "/static/..%2f..%2fauth.py", "/static/%2e%2e/app.py"):
        assert client.get(url).status_code == 404, url


def test_an_altered_image_is_refused(client, records):
    store = RecordStore(records, fsync=False)
    sid = store.start_session("op", "m", "u")
    img = np.zeros((32, 32, 3), np.uint8)
    rid = store.save(sid, "ALTERED", "right", 1, result("non_referable", 0.1), img, img, "op")
    store.close()
    with RecordReader(records) as r:
        path = records / r.record(rid)["photo_path"]
    path.write_bytes(path.read_bytes() + b"x")
    r = client.get(f"/image/{rid}/photo")
    assert r.status_code == 409 and "no longer matches the sha256" in text(r)


def test_referral_letter_page_a4_and_a5(client, records):
    visit = next(v for v in today_visits(records) if v.verdict == "referable" and v.patient_id.startswith("P"))
    url = f"/patient/{visit.patient_id}/referral?session={visit.session_id}"
    html = text(client.get(url))
    assert "Demo clinic (synthetic data)" in html and "Eye clinic, District Hospital (demo address)" in html
    assert "results must not be used for diagnosis or treatment decisions" in html
    assert "Referral to an eye specialist" in html
    assert "Referable diabetic retinopathy suspected" in html and "cut-off 0.60" in html
    assert "paper-a4.css" in html
    assert "paper-a5.css" in text(client.get(url + "&paper=A5"))
    assert "size: A5" in text(client.get("/static/paper-a5.css"))
    assert "size: A4" in text(client.get("/static/paper-a4.css"))


def test_letter_for_a_patient_without_referral_says_so(client, records):
    visit = next(v for v in today_visits(records) if v.verdict == "non_referable")
    html = text(client.get(f"/patient/{visit.patient_id}/referral?session={visit.session_id}"))
    assert "No referral needed" in html and "Please go to" not in html


@pytest.mark.parametrize("paper, width_pt", [("A4", 595.28), ("A5", 419.53)])
def test_referral_pdf(client, records, paper, width_pt):
    visit = next(v for v in today_visits(records) if v.verdict == "referable" and v.patient_id.startswith("P"))
    r = client.get(f"/patient/{visit.patient_id}/referral.pdf?session={visit.session_id}&paper={paper}")
    assert r.status_code == 200 and r.mimetype == "application/pdf" and r.data.startswith(b"%PDF-")
    assert "attachment" in r.headers["Content-Disposition"]
    assert re.search(rb"/MediaBox \[0 0 %.2f" % width_pt, r.data)
    assert r.data.count(b"/Type /Page\n") + r.data.count(b"/Type /Page ") + r.data.count(b"/Type /Page/") >= 1


def test_csv_export_of_a_range_neutralises_formulas(client, records):
    first = date.today() - timedelta(days=2)
    r = client.get(f"/export/screenings.csv?from={first}&to={date.today()}")
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(text(r))))
    with RecordReader(records) as reader:
        assert len(rows) == len(reader.between(*day_bounds(first, date.today())))
    odd = {row["patient_id"] for row in rows if not row["patient_id"].startswith("P")}
    assert "'=HYPERLINK(\"http://x\",\"click\")" in odd and "'+SUM(A1)" in odd and "'@cmd" in odd
    assert "'-2+3" in odd and "O'Brien%_1" in odd
    assert all(not row[c].startswith(("=", "+", "-", "@")) for row in rows for c in row)
    assert {row["patient_verdict"] for row in rows} <= {"referable", "non_referable", "incomplete"}
    yesterday = date.today() - timedelta(days=1)
    one_day = list(csv.DictReader(io.StringIO(text(client.get(f"/export/screenings.csv?from={yesterday}&to="
                                                              f"{yesterday}")))))
    assert 0 < len(one_day) < len(rows)


def test_json_export(client, records):
    doc = json.loads(text(client.get("/export/screenings.json")))  # default: today
    assert "not a medical device" in doc["notice"] and doc["from"] == doc["to"] == str(date.today())
    assert {v["patient_id"] for v in doc["visits"]} >= set(ODD_IDS)
    assert doc["screenings"][0]["regions"] is not None and isinstance(doc["screenings"][0]["timings"], dict)


def test_unit_page(client, records):
    html = text(client.get("/unit"))
    assert "GiB free" in html and "eyepacs" in html and "file matches" in html  # the bundled model's card
    assert "Not run yet" in html or "Self-test" in html
    assert "session_started" in html  # the audit trail
    assert "Research tool" in html


def test_unit_page_shows_camera_link_errors_and_selftest(client, records):
    store = RecordStore(records, fsync=False, recover=False)
    store.audit("unit", "link_disconnected", {"detail": "USB cable pulled"})
    store.audit("op", "error", {"headline": "CAMERA PROBLEM", "message": "The camera is unplugged: plug it in."})
    store.audit("unit", "selftest", {"ok": False, "checks": [{"name": "disk", "ok": False, "message": "full"}]})
    store.close()
    html = text(client.get("/unit"))
    assert "FAULT: The camera is unplugged" in html and "FAULT: disconnected: USB cable pulled" in html
    assert "FAILED" in html and "FAIL disk: full" in html
    audit = text(client.get("/audit"))
    assert "link_disconnected" in audit and "Page 1 of" in audit


def test_missing_records_database_is_one_sentence(records, tmp_path):
    from tests.device.console.conftest import login, make_app

    empty = tmp_path / "empty"
    from device.console.auth import Credentials

    Credentials.for_records(empty).set_password("nurse", "pin-123456")
    c = make_app(empty).test_client()
    login(c)
    r = c.get("/")
    assert r.status_code == 503 and "There is no records database" in text(r)

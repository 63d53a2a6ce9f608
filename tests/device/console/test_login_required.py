"""Without a live login, every route gives nothing but the login page (route by route), plus the auth machinery:
CSRF, rate limits, expiry, logout, credentials."""

from __future__ import annotations

import stat

import pytest

from device.console import app as console_app
from device.console.auth import Credentials, Sessions
from device.errors import ConfigError
from tests.device.console.conftest import PASSWORD, USER, csrf, login, make_app

# Every route of the console and a concrete URL for it. A new route must be added here (the test below fails
# otherwise), so none can slip out from behind the login.
PUBLIC = {"login", "static", "theme"}


def urls_for(records, app) -> dict[str, list[tuple[str, str]]]:
    from device.console.store import RecordReader

    with RecordReader(records) as r:
        row = r.between("0", "9")[0]
    pid, rid = row["patient_id"], row["id"]
    return {
        "day": [("GET", "/"), ("GET", "/?day=2020-01-01&verdict=referable")],
        "search": [("GET", f"/search?q={pid}")],
        "patient": [("GET", f"/patient/{pid}")],
        "image": [("GET", f"/image/{rid}/photo"), ("GET", f"/image/{rid}/screen")],
        "unit": [("GET", "/unit")],
        "audit": [("GET", "/audit")],
        "export": [("GET", "/export")],
        "export_file": [("GET", "/export/screenings.csv"), ("GET", "/export/screenings.json")],
        "referral": [("GET", f"/patient/{pid}/referral")],
        "referral_pdf": [("GET", f"/patient/{pid}/referral.pdf")],
        "logout": [("POST", "/logout")],
        "login": [("GET", "/login"), ("POST", "/login")],
        "static": [("GET", "/static/console.css")],
        "theme": [("GET", "/theme.css")],
    }


def test_every_route_is_listed(records, app):
    listed = set(urls_for(records, app))
    assert {rule.endpoint for rule in app.url_map.iter_rules()} == listed


def test_without_login_every_route_gives_only_the_login_page(records, app):
    from device.console.store import RecordReader

    client = app.test_client()
    with RecordReader(records) as r:  # data a stranger must not see (the URLs only hold ids they typed)
        row = r.between("0", "9", full=True)[0]
    secrets = (row["photo_sha256"], row["operator"], row["model_id"], "P000")
    for endpoint, calls in urls_for(records, app).items():
        for method, url in calls:
            response = client.open(url, method=method)
            body = response.get_data(as_text=True)
            if endpoint in PUBLIC:
                if endpoint == "login":
                    assert response.status_code in (200, 400, 401), url  # the page, or the form refused
                    assert 'name="password"' in body or "expired" in body
                else:
                    assert response.mimetype == "text/css", url
                assert not any(x in body for x in secrets), url
                continue
            assert response.status_code == 302, (method, url, response.status_code)
            assert response.headers["Location"].startswith("/login"), url
            assert not any(x in body.replace(url, "") for x in secrets[:3]), url
            page = client.get(response.headers["Location"])
            assert page.status_code == 200 and 'name="password"' in page.get_data(as_text=True)


@pytest.mark.parametrize("url", ["/nope", "/patient", "/image/../../etc/passwd", "/static/../app.py",
                                 "/export/screenings.xlsx", "/%2e%2e/%2e%2e/etc/passwd", "/admin", "/.git/config"])
def test_unknown_addresses_also_redirect_to_login(app, url):
    response = app.test_client().get(url)
    assert response.status_code in (302, 404)
    if response.status_code == 404:  # static files are public: only a missing asset may 404
        assert url.startswith("/static/")
    else:
        assert response.headers["Location"].startswith("/login")


def test_redirect_back_after_login_only_to_this_console(app):
    c = app.test_client()
    assert c.get("/unit").headers["Location"] == "/login?next=/unit"
    token = csrf(c)
    r = c.post("/login", data={"user": USER, "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_wrong_pin_and_unknown_user_are_refused(app):
    c = app.test_client()
    assert login(c, password="wrong-pin").status_code == 401
    assert login(c, user="nobody").status_code == 401
    assert c.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(app):
    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"user": USER, "password": PASSWORD})
    assert r.status_code == 400 and "expired" in r.get_data(as_text=True)
    assert c.get("/").status_code == 302


def test_failed_logins_are_rate_limited_per_address(app):
    c = app.test_client()
    for _ in range(5):
        assert login(c, password="wrong-pin").status_code == 401
    assert login(c, password="wrong-pin").status_code == 429
    r = login(c)  # even the right PIN waits: a guesser cannot tell a hit
    assert r.status_code == 429 and "Too many" in r.get_data(as_text=True)
    other = app.test_client()  # another address is not locked out
    assert login(other, REMOTE_ADDR="10.42.0.7").status_code == 303


def test_successful_logins_do_not_count(app):
    c = app.test_client()
    for _ in range(7):
        assert login(c).status_code == 303


def test_failed_logins_are_rate_limited_for_the_whole_unit(records, monkeypatch):
    monkeypatch.setattr(console_app, "LOGIN_LIMIT_UNIT", "3 per hour")
    app = make_app(records)
    c = app.test_client()
    for i in range(3):
        assert login(c, password="wrong-pin", REMOTE_ADDR=f"10.42.0.{i + 10}").status_code == 401
    assert login(c, password="wrong-pin", REMOTE_ADDR="10.42.0.99").status_code == 429


def test_logins_expire_when_idle_and_after_the_maximum(records, clock):
    app = make_app(records, clock, idle_minutes=15, max_hours=1)
    c = app.test_client()
    login(c)
    clock.now += 14 * 60
    assert c.get("/").status_code == 200  # each request keeps it alive...
    clock.now += 14 * 60
    assert c.get("/").status_code == 200
    clock.now += 16 * 60
    assert c.get("/").status_code == 302  # ...but 16 idle minutes end it
    login(c)
    for _ in range(5):
        clock.now += 13 * 60
        c.get("/")
    assert c.get("/").status_code == 302  # 65 minutes after login, busy or not


def test_logout_needs_csrf_and_ends_the_login_on_the_server(app):
    c = app.test_client()
    login(c)
    stolen = c.get_cookie("dr_console").value
    assert c.post("/logout").status_code == 400  # no token: refused, still logged in
    assert c.get("/").status_code == 200
    assert c.post("/logout", data={"csrf_token": csrf(c, "/")}).status_code == 303
    assert c.get("/").status_code == 302
    replay = app.test_client()
    replay.set_cookie("dr_console", stolen)
    assert replay.get("/").status_code == 302  # the old cookie is worthless after logout


def test_cookie_and_security_headers(app):
    c = app.test_client()
    r = login(c)
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for url in ("/", "/login", "/static/console.css", "/nope"):
        h = c.get(url).headers
        assert "default-src 'none'" in h["Content-Security-Policy"] and "frame-ancestors 'none'" in \
            h["Content-Security-Policy"]
        assert h["Cache-Control"] == "no-store" and h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"


def test_sessions_expire_and_tokens_are_random():
    now = [0.0]
    s = Sessions(idle=10, max_age=30, clock=lambda: now[0])
    a, b = s.start("x"), s.start("x")
    assert a != b and len(a) >= 40
    now[0] = 9
    assert s.user(a) == "x"
    now[0] = 20
    assert s.user(a) is None and s.user(b) is None
    assert s.user("made-up") is None and s.user(None) is None


def test_credentials_are_salted_argon2id_hashes_readable_by_the_user_only(tmp_path):
    creds = Credentials.for_records(tmp_path)
    creds.set_password("a", "same-pin-1")
    creds.set_password("b", "same-pin-1")
    users = creds.users()
    assert users["a"].startswith("$argon2id$") and users["a"] != users["b"]
    assert "same-pin-1" not in creds.path.read_text()
    assert stat.S_IMODE(creds.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.path.parent.stat().st_mode) == 0o700
    assert creds.verify("a", "same-pin-1") and not creds.verify("a", "same-pin-2")
    assert not creds.verify("c", "same-pin-1")


@pytest.mark.parametrize("user, password, words", [("ok", "12345", "6 to 256"), ("bad name", "123456", "user name"),
                                                   ("", "123456", "user name")])
def test_bad_names_and_short_pins_are_refused(tmp_path, user, password, words):
    with pytest.raises(ConfigError, match=words):
        Credentials.for_records(tmp_path).set_password(user, password)


def test_damaged_credentials_file_is_one_sentence(tmp_path):
    creds = Credentials.for_records(tmp_path)
    creds.path.parent.mkdir(parents=True)
    creds.path.write_text("{not json")
    with pytest.raises(ConfigError, match="damaged: delete it and set the password again"):
        creds.verify("a", "b")

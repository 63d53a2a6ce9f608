"""The console's Flask application: login, security headers, error pages; the pages are in :mod:`.views`,
the exports and referral letters in :mod:`.exports`.

Every request except the login page and the bundled stylesheet needs a live login: without one the answer is a
redirect to ``/login`` (unknown addresses too, so a stranger cannot even tell which pages exist). Forms carry a
CSRF token (Flask-WTF), failed logins are rate-limited per address and for the whole unit (Flask-Limiter), every
answer forbids caching and framing and allows no script, style or image from anywhere but this unit.

    app = create_app(ConsoleSettings(records=Path("demo_output/records"), unit=load_config()))
    app.test_client().get("/")        # -> 302 to /login
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from flask import Flask, Response, g, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect

from device.console import exports, views
from device.console.auth import Credentials, Sessions
from device.console.context import ConsoleSettings
from device.errors import ScreeningError
from device.notice import INTENDED_USE as LONG_NOTICE
from device.notice import RESEARCH_NOTICE as NOTICE
from device.screen_render import COLOURS, TEXT_ON

PUBLIC_ENDPOINTS = {"login", "static", "theme"}  # everything else needs a login
# OWASP Authentication Cheat Sheet: throttle failed logins per client and overall. Only failures count.
LOGIN_LIMIT_PER_ADDRESS = "5 per minute;20 per hour"
LOGIN_LIMIT_UNIT = "100 per hour"  # all addresses together: a hotspot client cannot rotate addresses to guess
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # patient data must not stay in a shared tablet's cache
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ACCESS_LOG = "access.log"  # beside the credentials; the database is read-only for the console


def _access_log(folder: Path) -> logging.Logger:
    log = logging.getLogger(f"device.console.access.{folder}")
    if not log.handlers:
        path = folder / ACCESS_LOG
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # created unit-user-only
            handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:  # a read-only card: the console still serves, the log goes to stderr
            handler = logging.StreamHandler()
            logging.getLogger("device.console").warning("access log %s cannot be written (%s)", path, exc)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def _safe_next(target: str | None) -> str:
    """Only a path on this console (never ``//host`` or a full URL): no open redirect after login."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def create_app(settings: ConsoleSettings, credentials: Credentials | None = None, clock=None) -> Flask:
    """Build the console for one records folder.

    Args:
        settings: records folder and unit config.
        credentials: who may log in (default: the file the config names, or ``<records>/console/``).
        clock: seconds, for login expiry (default ``time.monotonic``; tests pass a fake).
    """
    cfg = settings.unit.console
    creds = credentials or Credentials.for_records(settings.records, cfg.credentials)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # per process: a restart logs everybody out
        SESSION_COOKIE_NAME="dr_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_TIME_LIMIT=cfg.max_hours * 3600,
        MAX_CONTENT_LENGTH=16 * 1024,  # the only bodies are the login and logout forms
    )
    app.extensions["console"] = settings
    sessions = Sessions(idle=cfg.idle_minutes * 60, max_age=cfg.max_hours * 3600, clock=clock or time.monotonic)
    access = _access_log(creds.path.parent)
    app.extensions["console_access"] = access

    @app.before_request
    def require_login():  # registered before CSRFProtect, so a stranger's POST is redirected, not told 'CSRF'
        g.user = sessions.user(session.get("token"))
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if g.user is None:
            session.pop("token", None)
            nxt = request.full_path if request.method == "GET" and request.url_rule is not None else None
            return redirect(url_for("login", next=_safe_next(nxt).rstrip("?") if nxt else None))
        return None

    CSRFProtect(app)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", headers_enabled=False)
    app.extensions["console_limiter"] = limiter

    @app.teardown_request
    def close_reader(_exc):
        reader = g.pop("reader", None)
        if reader is not None:
            reader.close()

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.context_processor
    def page_globals():
        return {"notice": NOTICE, "long_notice": LONG_NOTICE, "clinic": cfg.clinic_name, "user": g.get("user")}

    failed = lambda response: response.status_code == 401  # noqa: E731 - only failed logins count

    @app.route("/login", methods=["GET", "POST"])
    @limiter.limit(LOGIN_LIMIT_PER_ADDRESS, methods=["POST"], deduct_when=failed)
    @limiter.shared_limit(LOGIN_LIMIT_UNIT, scope="login-unit", key_func=lambda: "unit", methods=["POST"],
                          deduct_when=failed)
    def login():
        nxt = _safe_next(request.values.get("next"))
        if request.method == "GET":
            return render_template("login.html", next=nxt, error=None)
        user = request.form.get("user", "").strip()[:64]
        password = request.form.get("password", "")[:256]
        try:
            ok = creds.verify(user, password)
        except ScreeningError as exc:
            return render_template("login.html", next=nxt, error=str(exc)), 503
        if not ok:
            access.info("login_failed user=%r from=%s", user, request.remote_addr)
            return render_template("login.html", next=nxt, error="Wrong name or PIN: try again."), 401
        session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        session["token"] = sessions.start(user)
        access.info("login user=%r from=%s", user, request.remote_addr)
        return redirect(nxt, 303)

    @app.post("/logout")
    def logout():
        sessions.end(session.get("token"))
        access.info("logout user=%r from=%s", g.user, request.remote_addr)
        session.clear()
        return redirect(url_for("login"), 303)

    @app.get("/theme.css")
    def theme():
        """Verdict colours from the result screen's palette (one home: device.screen_render.COLOURS)."""
        lines = [f".v-{k}{{background:rgb{v};color:rgb{TEXT_ON.get(k, (255, 255, 255))}}}" for k, v in
                 COLOURS.items()]
        lines.append(f".v-ungradable_final{{background:rgb{COLOURS['referable']};color:#fff}}")
        lines.append(f".v-incomplete{{background:rgb{COLOURS['ungradable']};color:rgb{TEXT_ON['ungradable']}}}")
        response = Response("\n".join(lines) + "\n", mimetype="text/css")
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(_exc):
        return render_template("error.html", title="Form expired",
                               message="This form has expired: go back, reload the page and try again."), 400

    @app.errorhandler(429)
    def too_many(_exc):
        return render_template("login.html", next="/", error="Too many failed logins: wait a few minutes, then "
                                                              "try again."), 429

    @app.errorhandler(404)
    def not_found(_exc):
        return render_template("error.html", title="Not found",
                               message="There is no such page or record: check the address or search again."), 404

    @app.errorhandler(ScreeningError)
    def unit_error(exc):
        return render_template("error.html", title="Records unavailable", message=str(exc)), 503

    @app.errorhandler(500)
    def server_error(_exc):
        return render_template("error.html", title="Something went wrong",
                               message="The console could not show this page: try again, and check the unit page "
                                       "for errors."), 500

    views.register(app)
    exports.register(app)
    return app


"""Who may use the dashboard: the API's rules, carried by a signed session cookie.

With no operator token configured, loopback clients see everything and everyone else is
refused, as on the API. Otherwise ``/login`` takes an API or read token and keeps, in Flask's
signed session, a keyed fingerprint of it (never the token): every request looks the
fingerprint up among the configured tokens again, so taking a token out of the config ends
the sessions opened with it. Read tokens see no buttons and their POSTs get 403. Every POST
carries the session's CSRF token in a hidden field.
"""

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Flask
from flask import Request
from flask import abort
from flask import current_app
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask.sessions import SecureCookieSession
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from provisioner.domain.tokens import token_hash
from provisioner.web import auth
from provisioner.web.dashboard.views import bp

log = logging.getLogger(__name__)

LOGINS_KEY = "provisioner.dashboard_logins"
CSRF_FIELD = "csrf_token"
SESSION_LIFETIME = timedelta(hours=12)
#: Endpoints that answer before anyone has logged in (the CSRF check still applies).
OPEN_ENDPOINTS = {"dashboard.login", "dashboard.static"}
#: POSTs that change nothing on the server, so a read token may send them.
READ_ROLE_POSTS = {"dashboard.logout"}


def fingerprint(secret_key: str, digest: str) -> str:
    """What the session keeps for a token: an HMAC of its digest under ``SECRET_KEY``.

    The cookie is signed, not encrypted; a bare SHA-256 of a short token in it could be
    brute-forced offline, this cannot without the server's key.
    """
    message = b"dashboard-login:" + digest.encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def known_logins(app: Flask) -> dict[str, str]:
    """Fingerprint → role for every configured token."""
    access: auth.Access = app.extensions[auth.EXTENSION_KEY]
    key = app.config["SECRET_KEY"]
    logins = {fingerprint(key, digest): auth.READ for digest in access.read}
    logins |= {fingerprint(key, digest): auth.FULL for digest in access.full}
    return logins


def session_role() -> str | None:
    """The role of the token this session logged in with, if it is still configured."""
    presented = session.get("operator")
    if not isinstance(presented, str):
        return None
    role = None
    for known, known_role in current_app.extensions[LOGINS_KEY].items():
        if hmac.compare_digest(presented, known):
            role = known_role
    return role


def log_in(token: str) -> str | None:
    """Start a session for ``token``; return its role, or ``None`` (nothing kept) if unknown."""
    role = auth.token_role(current_app.extensions[auth.EXTENSION_KEY], token)
    if role is None:
        return None
    session.clear()  # a fresh session (and CSRF token) for the new login
    session.permanent = True
    session["operator"] = fingerprint(current_app.config["SECRET_KEY"], token_hash(token))
    return role


def csrf_token() -> str:
    """This session's CSRF token, created on first use (templates call it for every form)."""
    if not isinstance(session.get("csrf"), str):
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """Refuse a POST whose hidden CSRF field does not match the session's token."""
    expected = session.get("csrf")
    presented = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(
        expected.encode(), presented.encode()
    ):
        abort(
            400,
            "The form did not come from this dashboard session (CSRF check failed); "
            "reload the page and try again.",
        )


def loopback_only() -> bool:
    """Tell whether no operator token is configured (the dashboard is open to loopback)."""
    return current_app.extensions[auth.EXTENSION_KEY].open_to_loopback_only


def safe_next(target: str | None) -> str:
    """A same-site path to return to after login; anything else goes to the nodes page."""
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/"):
        return url_for("dashboard.index")
    if target.startswith("//") or "\\" in target:
        return url_for("dashboard.index")
    return target


@bp.before_request
def check_access() -> Response | None:
    """Decide who may see the page, and whether a POST may change anything."""
    g.operator_role = None
    if request.endpoint not in OPEN_ENDPOINTS:
        if loopback_only():
            refusal = auth.loopback_refusal("The dashboard")
            if refusal is not None:
                abort(403, refusal + ".")
            g.operator_role = auth.FULL
        else:
            g.operator_role = session_role()
            if g.operator_role is None:
                if request.endpoint and request.endpoint.startswith("dashboard.fragment_"):
                    abort(401, "Log in again.")
                target = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for("dashboard.login", next=target), 303)
        writes = request.method == "POST" and request.endpoint not in READ_ROLE_POSTS
        if writes and g.operator_role != auth.FULL:
            abort(403, "A read token cannot change anything; log in with an API token.")
    if request.method == "POST":
        check_csrf()
    return None


@bp.after_request
def security_headers(response: Response) -> Response:
    """No framing (the buttons), no foreign scripts, no caching of operator pages."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """The login form: an API token opens everything, a read token the pages only."""
    if loopback_only():
        return redirect(url_for("dashboard.index"), 303)
    target = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("dashboard/login.html", next=target, error=None)
    role = log_in(request.form.get("token", "").strip())
    if role is None:
        log.warning("dashboard login refused from %s", request.remote_addr)
        error = "Unknown token. Use an API token or a read token from the server's config."
        return render_template("dashboard/login.html", next=target, error=error), 401
    log.info("dashboard login (%s access) from %s", role, request.remote_addr)
    return redirect(target, 303)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    """End the session."""
    session.clear()
    return redirect(url_for("dashboard.login"), 303)


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, opened only for requests that bring the cookie.

    Machines booting and reporting never send one; building the signer for each of their
    requests cost about a tenth of a boot. Without the cookie the session is empty anyway.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Cookie settings for the session, and the fingerprints of the configured tokens."""
    app.session_interface = CookieSessions()
    app.config.update(
        SESSION_COOKIE_NAME="provisioner_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.extensions[LOGINS_KEY] = known_logins(app)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["CSRF_FIELD"] = CSRF_FIELD

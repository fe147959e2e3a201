"""Who may call what: operator tokens for the API, report tokens for node reports.

Node-facing endpoints (boot scripts, reports, rendered configs) are never behind operator
tokens. With no operator token configured, the operator API answers loopback clients only.
The web dashboard follows the same rules through its own session cookie (a browser cannot
send a Bearer header), so this hook leaves its pages to ``provisioner.web.dashboard.access``.
"""

import ipaddress
from dataclasses import dataclass

from flask import Flask
from flask import current_app
from flask import request

from provisioner.domain.tokens import matches_any
from provisioner.domain.tokens import stored_form
from provisioner.web.api import fail

EXTENSION_KEY = "provisioner.access"

#: Endpoints a machine calls while it boots or installs: no operator token.
NODE_FACING = {
    "boot.boot",
    "boot_menu.choose",
    "boot.chain_script",
    "boot.install_config",
    "boot.install_config_seed",
    "boot.report_script",
    "assets.asset",
    "events.report",
    "events.phone_home",
}
#: Endpoints anyone may read: a liveness probe, the API description and Swagger UI's files,
#: the dashboard's login form and its stylesheet and script.
PUBLIC = {
    "nodes.health",
    "api-docs.openapi_json",
    "api-docs.openapi_swagger_ui",
    "swagger_ui.static",
    "static",
    "dashboard.login",
    "dashboard.static",
}
#: The blueprint whose pages check the dashboard session instead of a Bearer token.
DASHBOARD_BLUEPRINT = "dashboard"
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
#: What an operator token allows: everything, or reading only.
FULL = "full"
READ = "read"


@dataclass(frozen=True)
class Access:
    """The configured operator tokens, as the digests they are compared by."""

    full: list[str]
    read: list[str]

    @property
    def open_to_loopback_only(self) -> bool:
        return not self.full and not self.read


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def is_loopback(address: str | None) -> bool:
    """Tell whether ``address`` is on this machine (127.0.0.0/8 or ::1)."""
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


#: Headers a proxy adds to say whom it forwards for.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def unread_forwarding() -> str | None:
    """The proxy header this request carries but the server did not read, if any.

    The client's address is then the proxy's: a loopback proxy makes everyone loopback.
    ``TRUSTED_PROXIES`` hops of X-Forwarded-For are read (werkzeug's ``ProxyFix``); a
    shorter list, or another header only, leaves the proxy's address in place.
    """
    present = [name for name in FORWARDING_HEADERS if name in request.headers]
    if not present:
        return None
    hops = current_app.config["TRUSTED_PROXIES"]
    forwarded_for = request.headers.get("X-Forwarded-For", "")
    if hops and len([part for part in forwarded_for.split(",") if part.strip()]) >= hops:
        return None
    return present[0]


def loopback_refusal(what: str) -> str | None:
    """Why ``what`` refuses this client in loopback-only mode, or ``None`` if it may pass."""
    header = unread_forwarding()
    if header is not None:
        return (
            f"{what} answers loopback clients only until API_TOKENS is set, and this request "
            f"came through a proxy ({header}) whose client is unknown: set TRUSTED_PROXIES "
            "to the number of proxies in front of the server (they must send X-Forwarded-For)"
        )
    if not is_loopback(request.remote_addr):
        return f"{what} answers loopback clients only until API_TOKENS is set"
    return None


def token_role(access: Access, token: str | None) -> str | None:
    """What ``token`` may do: ``FULL``, ``READ``, or ``None`` for an unknown token."""
    if matches_any(token, access.full):
        return FULL
    if matches_any(token, access.read):
        return READ
    return None


def authorize_operator() -> None:
    """``before_request`` hook: refuse an operator call without the right token."""
    endpoint = request.endpoint
    if endpoint is None or endpoint in NODE_FACING or endpoint in PUBLIC:
        return
    if request.blueprint == DASHBOARD_BLUEPRINT:
        return  # the dashboard's own session check decides (dashboard/access.py)
    access: Access = current_app.extensions[EXTENSION_KEY]
    if access.open_to_loopback_only:
        refusal = loopback_refusal("The operator API")
        if refusal is not None:
            fail(403, refusal)
        return
    role = token_role(access, bearer_token())
    if role == FULL:
        return
    if role == READ:
        if request.method in READ_METHODS:
            return
        fail(403, "A read token cannot change anything; use an API token")
    fail(401, "Missing or unknown API token (send Authorization: Bearer <token>)")


def init_app(app: Flask) -> None:
    """Read the configured tokens and install the hook."""
    app.extensions[EXTENSION_KEY] = Access(
        full=[stored_form(token) for token in app.config["API_TOKENS"]],
        read=[stored_form(token) for token in app.config["READ_TOKENS"]],
    )
    app.before_request(authorize_operator)


def startup_warnings(app: Flask) -> list[str]:
    """What an operator should fix before exposing the server."""
    warnings = []
    if app.extensions[EXTENSION_KEY].open_to_loopback_only:
        warnings.append(
            "no API_TOKENS configured: the operator API and the dashboard answer loopback "
            "clients only; run `provisioner token new` and put the line it prints in the config"
        )
    if app.config["REPORT_AUTH"] == "open":
        warnings.append(
            'REPORT_AUTH = "open": anyone who knows a MAC address can report for that node'
        )
    return warnings

"""What a browser must not be made to do: DNS rebinding and cross-site writes.

With no operator token configured the operator API trusts any loopback client, and the
operator's own browser is one. Three checks keep other web sites from using it:

- In loopback-only mode, ``Host`` must be a name this server answers to (``ALLOWED_HOSTS``,
  and always IP literals, ``localhost``, the machine's names and ``SERVER_URL``'s host), so
  a page whose DNS name has been rebound to this server cannot read it. Node-facing
  endpoints skip this: machines reach them by whatever name their DHCP and iPXE setup
  gives, and they answer a browser nothing a machine on the network could not get. With
  operator tokens a rebound page has no token (nor the dashboard's cookie, which belongs
  to the real name), so load balancers and scrapers may use any name.
- A state-changing request that a browser marks as coming from another site
  (``Sec-Fetch-Site``, else ``Origin``) is refused everywhere; so is a cross-site ``GET``
  of a node-facing endpoint, because serving an installer changes a node's state.
- Writes to the JSON API must be JSON: a cross-site HTML form can only send
  ``application/x-www-form-urlencoded``, ``multipart/form-data`` or ``text/plain``. Only
  cloud-init's ``phone_home`` posts a form, and it needs the node's report token.
"""

import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import NoReturn
from urllib.parse import urlsplit

from flask import Flask
from flask import abort
from flask import current_app
from flask import request

from provisioner.web.api import NOT_JSON_TYPE
from provisioner.web.api import fail
from provisioner.web.auth import EXTENSION_KEY as ACCESS_KEY
from provisioner.web.auth import NODE_FACING
from provisioner.web.auth import READ_METHODS

EXTENSION_KEY = "provisioner.allowed_hosts"
#: Endpoints that take an HTML form body; the dashboard's forms carry its CSRF token.
FORM_ENDPOINTS = {"events.phone_home"}
DASHBOARD_BLUEPRINT = "dashboard"
#: ``Sec-Fetch-Site`` values a browser sends for a request another site started.
FOREIGN_SITES = {"cross-site", "same-site"}
DEFAULT_PORTS = {"http": "80", "https": "443"}
JSON_TYPE = "application/json"


def split_host(host: str) -> tuple[str, str]:
    """``name[:port]`` or ``[v6][:port]`` → (lower-case name without brackets, port)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    name, colon, port = host.rpartition(":")
    return (name, port) if colon and port.isdigit() else (host, "")


def is_ip_literal(name: str) -> bool:
    """Tell whether ``name`` is an IP address: a DNS name could be rebound, an address cannot."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@functools.cache
def machine_names() -> frozenset[str]:
    """This machine's host name and fully qualified name (looked up once, when first needed)."""
    names = {socket.gethostname(), socket.getfqdn()}
    return frozenset(name.lower().rstrip(".") for name in names if name)


class AllowedHosts:
    """The names ``Host`` may carry: IP literals, localhost, this machine's names,
    ``SERVER_URL``'s host and ``ALLOWED_HOSTS`` (exact names, ``.suffix`` for a domain and
    its subdomains, ``*`` for any)."""

    def __init__(self, configured: Iterable[str], server_url: str) -> None:
        names = {name.lower().rstrip(".") for name in configured}
        self.any = "*" in names
        self.suffixes = tuple(name for name in names if name.startswith("."))
        self.exact = {name for name in names if not name.startswith(".")} | {"localhost"}
        server_host = urlsplit(server_url).hostname
        if server_host:
            self.exact.add(server_host.rstrip("."))
        self.allows = functools.lru_cache(maxsize=256)(self._allows)

    def _allows(self, host: str) -> bool:
        name = split_host(host)[0].rstrip(".")
        if self.any or name in self.exact or is_ip_literal(name):
            return True
        if any(name.endswith(suffix) or name == suffix[1:] for suffix in self.suffixes):
            return True
        return name in machine_names()


def refuse(code: int, message: str) -> NoReturn:
    """Abort with ``message``: a JSON error on the API, an error page on the dashboard."""
    if request.blueprint == DASHBOARD_BLUEPRINT:
        abort(code, message)
    fail(code, message)
    raise AssertionError("fail() returned")  # pragma: no cover


def check_host() -> None:
    """Refuse a ``Host`` this server does not answer to (a DNS rebinding page)."""
    allowed: AllowedHosts = current_app.extensions[EXTENSION_KEY]
    if not request.host:  # werkzeug gives "" for a malformed Host
        refuse(400, "The Host header is missing or malformed")
    if not allowed.allows(request.host):
        refuse(
            400,
            f"Host {request.host[:100]!r} is not a name this server answers to; "
            "add it to ALLOWED_HOSTS",
        )


def same_origin(origin: str) -> bool:
    """Tell whether an ``Origin`` header names the host and port this request came to.

    A default port counts as none on either side, and the scheme is not compared: behind a
    proxy that ends TLS the browser says ``https`` to a server that sees ``http``.
    """
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    try:
        origin_port = str(parts.port or "")
    except ValueError:
        return False
    name, port = split_host(request.host)
    defaults = set(DEFAULT_PORTS.values())
    origin_port = "" if origin_port == DEFAULT_PORTS[parts.scheme] else origin_port
    return parts.hostname == name and origin_port == ("" if port in defaults else port)


def check_same_site() -> None:
    """Refuse a request a browser says another site started."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        if fetch_site.strip().lower() in FOREIGN_SITES:
            refuse(403, f"Cross-site request refused (Sec-Fetch-Site: {fetch_site[:20]})")
        return
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin):
        refuse(
            403,
            f"Cross-site request refused: Origin {origin[:100]!r} is not this server "
            f"({request.host[:100]!r}); a proxy in front must pass the Host header "
            "(nginx: proxy_set_header Host $host) or set X-Forwarded-Host with TRUSTED_PROXIES",
        )


def check_json_write() -> None:
    """Refuse a write to the JSON API whose body is not JSON (as an HTML form's is)."""
    environ = request.environ
    content_type = environ.get("CONTENT_TYPE")
    if content_type is not None and content_type.partition(";")[0].strip().lower() == JSON_TYPE:
        return  # what every report sends: no need to parse it further
    has_body = bool(request.content_length) or environ.get("HTTP_TRANSFER_ENCODING")
    if (content_type or has_body) and not request.is_json:
        fail(422, "Invalid request: body: " + NOT_JSON_TYPE, errors={"body": [NOT_JSON_TYPE]})


def guard_request() -> None:
    """``before_request`` hook: the Host, cross-site and JSON checks (module docstring).

    Machines boot and report by the thousand and send no browser headers: their requests
    cost a few dictionary lookups here.
    """
    current = request._get_current_object()  # type: ignore[attr-defined]
    endpoint = current.endpoint
    if endpoint is None:
        return  # a 404 reveals nothing and changes nothing
    environ = current.environ
    node_facing = endpoint in NODE_FACING
    if not node_facing and current_app.extensions[ACCESS_KEY].open_to_loopback_only:
        check_host()
    writes = environ["REQUEST_METHOD"] not in READ_METHODS
    browser = "HTTP_SEC_FETCH_SITE" in environ or "HTTP_ORIGIN" in environ
    if browser and (writes or node_facing):
        check_same_site()
    if writes and current.blueprint != DASHBOARD_BLUEPRINT and endpoint not in FORM_ENDPOINTS:
        check_json_write()


def init_app(app: Flask) -> None:
    """Keep the allowed host names and install the hook."""
    app.extensions[EXTENSION_KEY] = AllowedHosts(
        app.config["ALLOWED_HOSTS"], app.config["SERVER_URL"]
    )
    app.before_request(guard_request)

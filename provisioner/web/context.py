"""Request-time accessors the views share: the clock, the workflow store, the server URL,
the node a URL names and the report token a request presents."""

import functools
from datetime import datetime

from flask import Flask
from flask import Request
from flask import current_app
from flask import request
from werkzeug.sansio.utils import get_current_url

from provisioner.domain.ipaddr import valid_ip_or_none
from provisioner.domain.workflows import WorkflowStore
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.store.nodes_repo import find_by_ref
from provisioner.store.reads import SingleReads
from provisioner.timeutil import utcnow
from provisioner.web.api import fail

#: ``app.extensions`` key of the app's ``SingleReads``.
SINGLE_READS_KEY = "provisioner.single_reads"


def now() -> datetime:
    """The current time, from the clock a test may inject as ``CLOCK``."""
    return current_app.config.get("CLOCK", utcnow)()


def workflow_store(app: Flask | None = None) -> WorkflowStore:
    """The workflow store of ``app``, by default the current one."""
    return (app or current_app).extensions["provisioner.domain.workflows"]


def single_reads(app: Flask | None = None) -> SingleReads:
    """The reads outside any transaction (``reads.SingleReads``) of ``app``, by default
    the current one."""
    return (app or current_app).extensions[SINGLE_READS_KEY]


def server_url(app: Flask | None = None) -> str:
    """The base URL nodes should use: ``SERVER_URL`` of ``app`` (by default the current
    one), else the one this request came to."""
    return (app or current_app).config["SERVER_URL"] or _base_url(request.scheme, request.host)


@functools.lru_cache(maxsize=256)
def _base_url(scheme: str, host: str) -> str:
    """``request.host_url`` without the slash; its IRI decoding cost a tenth of a boot."""
    return get_current_url(scheme, host).rstrip("/")


def peer_ip() -> str | None:
    """The client's address (``TRUSTED_PROXIES`` hops of X-Forwarded-For honoured)."""
    # Held to the node-field rule: it may be stored as a node's ip_address and so reach an
    # install config (a proxy's X-Forwarded-For is not checked by ProxyFix).
    return valid_ip_or_none(request.remote_addr)


def get_node_or_404(ref: str, *, for_update: bool = False) -> Node:
    """The node named by id or MAC, or a 404 naming it."""
    node = find_by_ref(db.session, ref, for_update=for_update)
    if node is None:
        fail(404, f"Node {ref[:80]!r} not found")
    return node  # type: ignore[return-value]


def presented_token(request: Request) -> str | None:
    """A report token from ``Authorization: Bearer``, ``X-Report-Token`` or ``?token=``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-Report-Token") or request.args.get("token") or None

"""Dashboard pages and the fragments their script polls; every page renders server-side.

Each page is a frame around a live part; ``/fragments/...`` renders that part alone, and
``static/live.js`` fetches it every few seconds and swaps it in. Without JavaScript the
pages are complete, just not live.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import g
from flask import render_template
from flask import request
from werkzeug.exceptions import HTTPException

from provisioner.domain import inventory
from provisioner.domain.lifecycle import STATE_NAMES
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import valid_transitions
from provisioner.domain.scrape import node_counts
from provisioner.domain.scrape import stalled_among
from provisioner.domain.stalled_feed import stalled_feed
from provisioner.domain.sweeper import StallRules
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.store import eventlog
from provisioner.store.nodes_repo import find_by_ref
from provisioner.web.auth import FULL
from provisioner.web.context import now
from provisioner.web.context import workflow_store
from provisioner.web.dashboard import queries
from provisioner.web.groups import node_group

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)

#: Events shown on a node's page (the API pages through the rest).
TIMELINE_LENGTH = 100
#: The stalled-feed rows one page shows.
STALLED_LIMIT = 500


def stall_rules() -> StallRules:
    """The configured stall limits."""
    return StallRules.from_config(current_app.config)


def node_or_404(ref: str) -> Node:
    """The node named by id or MAC, or a 404 page naming it."""
    node = find_by_ref(db.session, ref)
    if node is None:
        abort(404, f"Node {ref[:80]!r} not found.")
    return node  # type: ignore[return-value]


def nodes_context() -> dict[str, Any]:
    """What the nodes table shows, for the filters in the query string."""
    filters = queries.NodeFilters.from_args(request.args)
    nodes, total = queries.filtered_nodes(db.session, filters)
    shown = [node.id for node in nodes]
    return {
        "nodes": nodes,
        "total": total,
        "filters": filters,
        "counts": node_counts(db.session),
        "stalled_total": queries.stalled_total(db.session, stall_rules(), now()),
        "stalled_ids": stalled_among(db.session, stall_rules(), now(), shown),
        "max_attempts": current_app.config["MAX_INSTALL_ATTEMPTS"],
    }


@dataclass(frozen=True)
class ServedEntry:
    """A boot that served the installer (a state-log row), shown among the node's events."""

    id: str
    created_at: datetime
    message: str | None
    metadata_: dict | None
    event_type: str = "installer_served"
    status: str = "success"
    progress: int | None = None
    effect: str | None = None
    ip_address: str | None = None
    client_event_id: str | None = None


def timeline(events: list[Any], history: list[NodeStateLog], complete: bool) -> list[Any]:
    """The events, newest first, with the boots that served the installer among them (those
    older than the oldest event shown are left out when the events are not all shown)."""
    oldest = events[-1].created_at if events and not complete else None
    served = [
        ServedEntry(f"served-{entry.id}", entry.created_at, entry.comment, entry.metadata_)
        for entry in history
        if entry.triggered_by == Trigger.BOOT and entry.to_state == State.INSTALLING
        if oldest is None or entry.created_at >= oldest
    ]
    return sorted([*events, *served], key=lambda item: item.created_at, reverse=True)


def node_context(node: Node) -> dict[str, Any]:
    """What a node's page shows: its facts, timeline and state history."""
    events, total_events = eventlog.node_events(
        db.session, node.id, event_type=None, limit=TIMELINE_LENGTH, offset=0
    )
    history = inventory.history(db.session, node)
    return {
        "node": node,
        "events": timeline(events, history, complete=len(events) >= total_events),
        "total_events": total_events,
        "shown_events": len(events),
        "history": list(reversed(history)),
        "max_attempts": current_app.config["MAX_INSTALL_ATTEMPTS"],
        "valid_moves": valid_transitions(node.state),
        "group": node_group(node),
    }


def stalled_context() -> dict[str, Any]:
    """The stalled feed, as its JSON twin computes it."""
    items, total = stalled_feed(db.session, stall_rules(), now(), limit=STALLED_LIMIT)
    return {"items": items, "total": total, "rules": stall_rules()}


def workflow_choices() -> list[str]:
    """Workflow ids that load, for the "set workflow" menu."""
    return [entry.id for entry in workflow_store().entries() if entry.error is None]


@bp.context_processor
def operator_context() -> dict[str, Any]:
    """``can_write`` hides every button from read tokens."""
    role = g.get("operator_role")
    return {"operator_role": role, "can_write": role == FULL, "state_names": STATE_NAMES}


@bp.errorhandler(HTTPException)
def error_page(error: HTTPException) -> tuple[str, int]:
    """Dashboard errors as pages, not the API's JSON."""
    return render_template("dashboard/error.html", error=error), error.code or 500


@bp.route("/")
def index() -> str:
    """Every node, filtered by state and tag or searched by MAC or hostname."""
    tags = queries.all_tags(db.session)
    return render_template(
        "dashboard/index.html", tags=tags, workflows=workflow_choices(), **nodes_context()
    )


@bp.route("/fragments/nodes")
def fragment_nodes() -> str:
    """The nodes table alone, for live.js."""
    return render_template("dashboard/_nodes.html", **nodes_context())


def render_node_page(node: Node, **extra: Any) -> str:
    """The node page; ``extra`` carries what one response shows once (a minted token)."""
    return render_template(
        "dashboard/node.html", workflows=workflow_choices(), **node_context(node), **extra
    )


@bp.route("/nodes/<ref>")
def node_page(ref: str) -> str:
    """One node: details, timeline, state history and the operator's buttons."""
    return render_node_page(node_or_404(ref))


@bp.route("/fragments/nodes/<ref>")
def fragment_node(ref: str) -> str:
    """A node's facts, timeline and history alone, for live.js."""
    return render_template("dashboard/_node.html", **node_context(node_or_404(ref)))


@bp.route("/workflows")
def workflows() -> str:
    """Every workflow file: what it boots, or why it does not load."""
    return render_template("dashboard/workflows.html", entries=workflow_store().entries())


@bp.route("/stalled")
def stalled() -> str:
    """The stalled feed: why each node is listed and for how long."""
    return render_template("dashboard/stalled.html", **stalled_context())


@bp.route("/fragments/stalled")
def fragment_stalled() -> str:
    """The stalled table alone, for live.js."""
    return render_template("dashboard/_stalled.html", **stalled_context())

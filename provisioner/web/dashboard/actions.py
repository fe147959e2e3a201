"""The operator's buttons: each POST runs the same schema and domain call as its API twin.

A refusal (a bad value, an unknown workflow, an illegal transition) is flashed with the API's
own message and the page is shown again; nothing is written by hand here.
"""

import logging

from flask import abort
from flask import flash
from flask import redirect
from flask import request
from flask import url_for
from marshmallow import ValidationError
from werkzeug.wrappers import Response

from provisioner.domain import inventory
from provisioner.domain.inventory import InventoryError
from provisioner.domain.lifecycle import ConcurrentTransition
from provisioner.domain.lifecycle import IllegalTransition
from provisioner.domain.lifecycle import State
from provisioner.domain.report_tokens import mint_report_token
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.store.nodes_repo import find_by_ref
from provisioner.store.transactions import write_transaction
from provisioner.web.api import error_message
from provisioner.web.api import flatten_errors
from provisioner.web.context import now
from provisioner.web.context import workflow_store
from provisioner.web.dashboard.views import bp
from provisioner.web.dashboard.views import render_node_page
from provisioner.web.schemas import NodeCreateSchema
from provisioner.web.schemas import NodeUpdateSchema
from provisioner.web.schemas import StateChangeSchema

log = logging.getLogger(__name__)

CREATE_SCHEMA = NodeCreateSchema()
UPDATE_SCHEMA = NodeUpdateSchema()
STATE_SCHEMA = StateChangeSchema()
#: The state log's comment for moves made here, so the audit trail says where they came from.
COMMENT = "from the dashboard"


def locked_node(ref: str) -> Node:
    """The node, its row locked for this write transaction, or a 404 page."""
    node = find_by_ref(db.session, ref, for_update=True)
    if node is None:
        abort(404, f"Node {ref[:80]!r} not found.")
    return node  # type: ignore[return-value]


def back_to(ref: str) -> Response:
    """Post/redirect/get: back to the node's page, where the flashed message shows."""
    return redirect(url_for("dashboard.node_page", ref=ref), 303)


def refuse_invalid(exc: ValidationError) -> None:
    """Flash a schema refusal the way the API words its 422."""
    flash(error_message("Unprocessable Entity", flatten_errors(exc.messages)), "error")


def new_node_fields() -> dict:
    """The "add node" form as the API's create schema reads it (empty fields left out)."""
    form = {key: request.form.get(key, "").strip() for key in ("mac_address", "hostname")}
    fields: dict = {key: value for key, value in form.items() if value}
    if request.form.get("workflow_id"):
        fields["workflow_id"] = request.form["workflow_id"]
    tags = request.form.get("tags", "").replace(",", " ").split()
    return CREATE_SCHEMA.load(fields | ({"tags": tags} if tags else {}))


@bp.route("/nodes", methods=["POST"])
def add_node() -> Response:
    """Register a node by hand, like ``POST /api/v1/nodes``; it starts ``discovered``."""
    try:
        fields = new_node_fields()
    except ValidationError as exc:
        refuse_invalid(exc)
        return redirect(url_for("dashboard.index"), 303)
    try:
        with write_transaction(db.session):
            node = inventory.create_node(db.session, fields, workflow_store(), now())
    except InventoryError as exc:
        flash(str(exc), "error")
        return redirect(url_for("dashboard.index"), 303)
    flash(f"Node {node.mac_address} added", "ok")
    return back_to(node.id)


@bp.route("/nodes/<ref>/workflow", methods=["POST"])
def set_workflow(ref: str) -> Response:
    """Assign a workflow (an empty choice clears it), like ``PATCH /api/v1/nodes/<id>``."""
    try:
        fields = UPDATE_SCHEMA.load({"workflow_id": request.form.get("workflow_id") or None})
    except ValidationError as exc:
        refuse_invalid(exc)
        return back_to(ref)
    try:
        with write_transaction(db.session):
            node = locked_node(ref)
            inventory.update_node(node, fields, workflow_store(), now())
    except InventoryError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Workflow set to {fields['workflow_id'] or '(none)'}", "ok")
    return back_to(ref)


@bp.route("/nodes/<ref>/state", methods=["POST"])
def change_state(ref: str) -> Response:
    """Move the node (start install, reprovision, retire), like ``PATCH .../state``.

    Reprovision also queues the reinstall (``reprovision → pending``), so one click does it.
    """
    try:
        args = STATE_SCHEMA.load({"state": request.form.get("state", "")})
    except ValidationError as exc:
        refuse_invalid(exc)
        return back_to(ref)
    try:
        with write_transaction(db.session):
            node = locked_node(ref)
            previous = node.state
            if args["state"] == State.REPROVISION:
                inventory.reprovision(db.session, node, now(), comment=COMMENT)
            else:
                inventory.set_state(db.session, node, args["state"], now(), comment=COMMENT)
    except IllegalTransition as exc:
        valid = ", ".join(exc.valid) or "none (retired is final)"
        flash(f"{exc}. Valid transitions from {exc.current}: {valid}.", "error")
    except ConcurrentTransition as exc:
        flash(f"{exc}; retry the request", "error")
    else:
        flash(f"State changed from {previous} to {node.state}{next_boot(node)}", "ok")
    return back_to(ref)


def next_boot(node: Node) -> str:
    """What the node's next PXE boot does, when the move queued an install."""
    if node.state != State.PENDING:
        return ""
    if node.workflow_id:
        return f": its next PXE boot installs {node.workflow_id}"
    return ": set a workflow before its next PXE boot"


@bp.route("/nodes/<ref>/report-token", methods=["POST"])
def new_report_token(ref: str) -> str:
    """Mint a report token and show it in this one response (it is stored only hashed)."""
    with write_transaction(db.session):
        node = locked_node(ref)
        token = mint_report_token(node)
    log.info("report token minted from the dashboard for node %s", node.id)
    return render_node_page(node, minted_token=token)

"""Power control API: queue actions (202), read their outcome, read a node's settings.

Settings are written through ``PATCH /api/v1/nodes/<id>`` (``{"power": {...}}``); the
password is accepted there and never shown again.
"""

from typing import Any

from flask import current_app

from provisioner.domain import power as rules
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.power.worker import service
from provisioner.store import power as store
from provisioner.store.nodes_repo import find_by_ref
from provisioner.store.transactions import write_transaction
from provisioner.web.api import Blueprint
from provisioner.web.api import fail
from provisioner.web.context import now
from provisioner.web.schemas.power import BulkPowerRequestSchema
from provisioner.web.schemas.power import PowerActionEnvelope
from provisioner.web.schemas.power import PowerActionListEnvelope
from provisioner.web.schemas.power import PowerActionRequestSchema
from provisioner.web.schemas.power import PowerViewEnvelope

bp = Blueprint("power", __name__, description="Power control through IPMI, Redfish, Wake-on-LAN")


def _node(ref: str, *, for_update: bool = False) -> Node:
    node = find_by_ref(db.session, ref, for_update=for_update)
    if node is None:
        fail(404, f"Node {ref[:80]!r} not found")
    return node  # type: ignore[return-value]


def request_error(exc: rules.PowerRequestError) -> None:
    fail(exc.status, str(exc), errors={exc.field: [str(exc)]})


@bp.route("/api/v1/nodes/<ref>/power", methods=["GET"])
@bp.response(200, PowerViewEnvelope)
def show_power(ref: str):
    """The node's power settings (never the password) and its last known power state."""
    node = _node(ref)
    return {"success": True, "data": rules.describe(store.settings_of(db.session, node.id))}


@bp.route("/api/v1/nodes/<ref>/power", methods=["POST"])
@bp.arguments(PowerActionRequestSchema())
@bp.response(202, PowerActionEnvelope)
def power_action(args: dict[str, Any], ref: str):
    """Queue a power action (on, off, cycle, status, pxe, netboot); 202 with its id.

    The outcome comes later as a ``power_<action>`` or ``power_failed`` event, and in
    ``GET /api/v1/power/actions/<id>``.
    """
    try:
        with write_transaction(db.session):
            node = _node(ref)
            action = rules.request_action(db.session, node, args["action"], "admin", now())
    except rules.PowerRequestError as exc:
        request_error(exc)
    service(current_app).submit([action.id])
    return {"success": True, "data": action, "message": f"Power {action.action} queued"}


@bp.route("/api/v1/power", methods=["POST"])
@bp.arguments(BulkPowerRequestSchema())
@bp.response(202, PowerActionListEnvelope)
def bulk_power_action(args: dict[str, Any]):
    """Queue one action for every node with the tag that has power control.

    Nodes without it (manual) or whose driver cannot do the action are skipped.
    """
    queued = []
    with write_transaction(db.session):
        for node in store.nodes_by_tag(db.session, args["tag"]):
            try:
                queued.append(
                    rules.request_action(db.session, node, args["action"], "admin", now())
                )
            except rules.PowerRequestError:
                continue
    service(current_app).submit([action.id for action in queued])
    return {"success": True, "data": queued, "total": len(queued)}


@bp.route("/api/v1/power/actions/<int:action_id>", methods=["GET"])
@bp.response(200, PowerActionEnvelope)
def show_action(action_id: int):
    """One power action: queued, running, succeeded (with the state) or failed (why)."""
    action = store.get_action(db.session, action_id)
    if action is None:
        fail(404, f"Power action {action_id} not found")
    return {"success": True, "data": action}


def configure(node: Node, spec: dict[str, Any]) -> None:
    """``PATCH /api/v1/nodes/<id>``'s ``power``: in the caller's write transaction."""
    box = service(current_app).box() if spec.get("password") else None
    rules.configure(db.session, node, spec, box, now())


def after_state_change(node: Node, explicit: bool | None):
    """In the state change's transaction: the reinstall's netboot action, if any (a 409 if
    ``power: true`` was asked of a node without power control)."""
    try:
        return rules.reinstall_action(
            db.session,
            node,
            explicit,
            current_app.config["POWER_ON_REPROVISION"],
            "admin",
            now(),
        )
    except rules.PowerRequestError as exc:
        request_error(exc)


def submit(action) -> None:
    """After the commit: hand the queued action (if any) to the worker pool."""
    if action is not None:
        service(current_app).submit([action.id])

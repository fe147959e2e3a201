"""Operator API for the node inventory and workflows: load → domain call → commit → dump."""

from typing import Any

from flask.views import MethodView
from marshmallow import Schema
from marshmallow import fields
from sqlalchemy import text

from provisioner.domain import inventory
from provisioner.domain.inventory import InventoryError
from provisioner.domain.report_tokens import mint_report_token
from provisioner.domain.workflows import WorkflowEntry
from provisioner.domain.workflows import WorkflowError
from provisioner.extensions import db
from provisioner.store.transactions import probe_write
from provisioner.store.transactions import storage_full
from provisioner.store.transactions import write_transaction
from provisioner.version import VERSION
from provisioner.web import power as power_web
from provisioner.web.api import Blueprint
from provisioner.web.api import fail
from provisioner.web.context import get_node_or_404
from provisioner.web.context import now
from provisioner.web.context import workflow_store
from provisioner.web.schemas import MessageSchema
from provisioner.web.schemas import NodeCreateSchema
from provisioner.web.schemas import NodeEnvelope
from provisioner.web.schemas import NodeListEnvelope
from provisioner.web.schemas import NodeListQuerySchema
from provisioner.web.schemas import NodeUpdateSchema
from provisioner.web.schemas import ReportTokenEnvelope
from provisioner.web.schemas import StateChangeSchema
from provisioner.web.schemas import StateLogListEnvelope
from provisioner.web.schemas import TagsSchema
from provisioner.web.schemas import WorkflowEnvelope
from provisioner.web.schemas import WorkflowListEnvelope

bp = Blueprint("nodes", __name__, description="Node inventory, state changes and workflows")


def ok(data: Any, message: str | None = None) -> dict[str, Any]:
    """The success envelope."""
    return {"success": True, "data": data, "message": message}


def inventory_error(exc: InventoryError) -> None:
    fail(exc.status, str(exc), errors={exc.field: [str(exc)]})


@bp.route("/api/v1/nodes")
class Nodes(MethodView):
    @bp.arguments(NodeListQuerySchema(), location="query")
    @bp.response(200, NodeListEnvelope)
    def get(self, args: dict[str, Any]):
        """List nodes, filtered by state or tag."""
        page, total = inventory.list_nodes(
            db.session,
            state=args.get("state"),
            tag=args.get("tag"),
            limit=args["limit"],
            offset=args["offset"],
        )
        return {"success": True, "data": page, "total": total}

    @bp.arguments(NodeCreateSchema())
    @bp.response(201, NodeEnvelope)
    def post(self, fields: dict[str, Any]):
        """Register a node by hand (state ``discovered``)."""
        try:
            with write_transaction(db.session):
                node = inventory.create_node(db.session, fields, workflow_store(), now())
        except InventoryError as exc:
            inventory_error(exc)
        return ok(node, "Node created")


@bp.route("/api/v1/nodes/<ref>")
class NodeItem(MethodView):
    @bp.response(200, NodeEnvelope)
    def get(self, ref: str):
        """Show one node, by id or MAC address."""
        return ok(get_node_or_404(ref))

    @bp.arguments(NodeUpdateSchema())
    @bp.response(200, NodeEnvelope)
    def patch(self, fields: dict[str, Any], ref: str):
        """Change a node's workflow, hostname, hardware facts or power settings."""
        power_spec = fields.pop("power", None)
        try:
            with write_transaction(db.session):
                node = get_node_or_404(ref, for_update=True)
                inventory.update_node(node, fields, workflow_store(), now())
                if power_spec is not None:
                    power_web.configure(node, power_spec)
        except InventoryError as exc:
            inventory_error(exc)
        return ok(node, "Node updated")

    @bp.response(200, MessageSchema)
    def delete(self, ref: str):
        """Delete a node and its history, so the machine can register afresh."""
        with write_transaction(db.session):
            node = get_node_or_404(ref, for_update=True)
            db.session.delete(node)
        return {"success": True, "message": f"Node {node.id} deleted"}


@bp.route("/api/v1/nodes/<ref>/state", methods=["PATCH"])
@bp.arguments(StateChangeSchema())
@bp.response(200, NodeEnvelope)
def change_state(args: dict[str, Any], ref: str):
    """Move a node to another state (409 with ``valid_transitions`` when not allowed)."""
    with write_transaction(db.session):
        node = get_node_or_404(ref, for_update=True)
        previous = node.state
        inventory.set_state(
            db.session,
            node,
            args["state"],
            now(),
            comment=args.get("comment"),
            force=args["force"],
        )
        netboot = power_web.after_state_change(node, args.get("power"))
    power_web.submit(netboot)
    return ok(node, f"State changed from {previous} to {node.state}")


@bp.route("/api/v1/nodes/<ref>/report-token", methods=["POST"])
@bp.response(201, ReportTokenEnvelope)
def new_report_token(ref: str):
    """Mint a report token for manual use; it is shown once and replaces the current one."""
    with write_transaction(db.session):
        node = get_node_or_404(ref, for_update=True)
        token = mint_report_token(node)
    return ok({"node_id": node.id, "token": token}, "Report token minted; it is shown only once")


@bp.route("/api/v1/nodes/<ref>/history")
@bp.response(200, StateLogListEnvelope)
def state_history(ref: str):
    """The node's state changes, oldest first."""
    entries = inventory.history(db.session, get_node_or_404(ref))
    return {"success": True, "data": entries, "total": len(entries)}


@bp.route("/api/v1/nodes/<ref>/tags", methods=["POST"])
@bp.arguments(TagsSchema())
@bp.response(200, NodeEnvelope)
def add_tags(args: dict[str, Any], ref: str):
    """Add tags to a node."""
    try:
        with write_transaction(db.session):
            node = get_node_or_404(ref, for_update=True)
            inventory.add_tags(node, args["tags"])
    except InventoryError as exc:
        inventory_error(exc)
    return ok(node, "Tags added")


@bp.route("/api/v1/nodes/<ref>/tags/<tag>", methods=["DELETE"])
@bp.response(200, NodeEnvelope)
def remove_tag(ref: str, tag: str):
    """Remove one tag from a node."""
    with write_transaction(db.session):
        node = get_node_or_404(ref, for_update=True)
        if not inventory.remove_tag(node, tag):
            fail(404, f"Node {node.id} has no tag {tag[:50]!r}")
    return ok(node, "Tag removed")


def _workflow_item(entry: WorkflowEntry) -> dict[str, Any]:
    item: dict[str, Any] = {"id": entry.id, "file": entry.file, "error": entry.error}
    if entry.workflow is not None:
        item |= vars(entry.workflow)
    item["valid"] = entry.error is None
    return item


@bp.route("/api/v1/workflows")
@bp.response(200, WorkflowListEnvelope)
def list_workflows():
    """Every workflow file; one that fails to load is listed with its error."""
    items = [_workflow_item(entry) for entry in workflow_store().entries()]
    return {"success": True, "data": items, "total": len(items)}


@bp.route("/api/v1/workflows/<workflow_id>")
@bp.response(200, WorkflowEnvelope)
def get_workflow(workflow_id: str):
    """One workflow; 404 if there is no file, 200 with ``error`` if it fails to load."""
    store = workflow_store()
    try:
        path = store.path_for(workflow_id)
    except WorkflowError as exc:
        fail(404, str(exc))
    try:
        entry = WorkflowEntry(workflow_id, path.name, workflow=store.load(workflow_id))
    except WorkflowError as exc:
        entry = WorkflowEntry(workflow_id, path.name, error=str(exc))
    return ok(_workflow_item(entry))


class HealthSchema(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"]})
    database = fields.String(
        metadata={"description": '"ok", "not writable: storage full", or the error\'s name'}
    )
    version = fields.String(metadata={"description": "The running provisioner's version"})


#: ``/health``'s ``database`` while writes fail for lack of storage.
NOT_WRITABLE = "not writable: storage full"


@bp.route("/health")
@bp.response(200, HealthSchema)
@bp.alt_response(
    503, schema=HealthSchema, description="The database does not answer or has no room left"
)
def health():
    """Liveness and database check: 200 when the database answers and takes writes, else 503.

    After a write failed for lack of storage, each call tries a write that changes nothing,
    so the answer turns back to ok once there is room again, with no other traffic.
    """
    try:
        db.session.execute(text("SELECT 1"))
        writable = not storage_full(db.session) or probe_write(db.session)
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        db.session.rollback()
        return {"status": "unavailable", "database": type(exc).__name__, "version": VERSION}, 503
    if not writable:
        return {"status": "unavailable", "database": NOT_WRITABLE, "version": VERSION}, 503
    return {"status": "ok", "database": "ok", "version": VERSION}

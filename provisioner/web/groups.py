"""Operator API for machine groups: CRUD and the dry-run ``/api/v1/groups/match``."""

from typing import Any

from flask import Flask
from flask import current_app
from flask.views import MethodView

from provisioner.domain.groups import Facts
from provisioner.domain.groups import GroupRule
from provisioner.domain.groups import dry_run
from provisioner.domain.groups import facts_with
from provisioner.domain.groups import rule_of
from provisioner.domain.groups import winning_group
from provisioner.extensions import db
from provisioner.models import MachineGroup
from provisioner.models import Node
from provisioner.store import groups as store
from provisioner.store.groups import GroupCache
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction
from provisioner.web.api import Blueprint
from provisioner.web.api import fail
from provisioner.web.context import now
from provisioner.web.context import workflow_store
from provisioner.web.schemas.fields import MessageSchema
from provisioner.web.schemas.groups import GroupCreateSchema
from provisioner.web.schemas.groups import GroupEnvelope
from provisioner.web.schemas.groups import GroupFieldsSchema
from provisioner.web.schemas.groups import GroupListEnvelope
from provisioner.web.schemas.groups import GroupMatchQuerySchema
from provisioner.web.schemas.groups import MatchEnvelope

bp = Blueprint("groups", __name__, description="Machine groups: workflows chosen by rules")
EXTENSION_KEY = "provisioner.groups"


def init_app(app: Any) -> None:
    """Give the app its group cache."""
    app.extensions[EXTENSION_KEY] = GroupCache(rule_of)


def group_cache(app: Flask | None = None) -> GroupCache[GroupRule]:
    """The cache of the groups of ``app``, by default the current one."""
    return (app or current_app).extensions[EXTENSION_KEY]


def node_group(node: Node) -> GroupRule | None:
    """The group ``node`` belongs to now, by its stored facts and tags."""
    rules = group_cache().rules(db.session)
    if not rules:
        return None
    tags = node.tags if any(rule.tags for rule in rules) else ()  # a query: only if it counts
    return winning_group(rules, Facts.of_node(node, tags))


def check_group(fields: dict[str, Any], current: MachineGroup | None = None) -> None:
    """Refuse an unknown workflow, and ``auto_install`` without a workflow (422)."""
    workflow_id = fields.get("workflow_id", current.workflow_id if current else None)
    if "workflow_id" in fields and workflow_id and not workflow_store().exists(workflow_id):
        message = f"Unknown workflow {workflow_id!r}"
        fail(422, message, errors={"workflow_id": [message]})
    auto = fields.get("auto_install", current.auto_install if current else False)
    if auto and not workflow_id:
        message = "auto_install needs a workflow_id: a machine cannot install without one"
        fail(422, message, errors={"auto_install": [message]})


def group_or_404(name: str, *, for_update: bool = False) -> MachineGroup:
    group = store.find_group(db.session, name, for_update=for_update)
    if group is None:
        fail(404, f"Group {name[:80]!r} not found")
    return group  # type: ignore[return-value]


@bp.route("/api/v1/groups")
class Groups(MethodView):
    @bp.response(200, GroupListEnvelope)
    def get(self):
        """Every group, by name."""
        groups = store.all_groups(db.session)
        return {"success": True, "data": groups, "total": len(groups)}

    @bp.arguments(GroupCreateSchema())
    @bp.response(201, GroupEnvelope)
    def post(self, fields: dict[str, Any]):
        """Create a group."""
        check_group(fields)
        name = fields.pop("name")
        with write_transaction(db.session):
            if store.find_group(db.session, name) is not None:
                fail(409, f"A group named {name!r} already exists", errors={"name": ["taken"]})
            group = store.add_group(db.session, name, fields, now())
        return {"success": True, "data": group, "message": "Group created"}


@bp.route("/api/v1/groups/<name>")
class GroupItem(MethodView):
    @bp.response(200, GroupEnvelope)
    def get(self, name: str):
        """One group."""
        return {"success": True, "data": group_or_404(name)}

    @bp.arguments(GroupFieldsSchema())
    @bp.response(200, GroupEnvelope)
    def patch(self, fields: dict[str, Any], name: str):
        """Change some of a group's fields (its name stays)."""
        with write_transaction(db.session):
            group = group_or_404(name, for_update=True)
            check_group(fields, group)
            store.change_group(db.session, group, fields, now())
        return {"success": True, "data": group, "message": "Group updated"}

    @bp.response(200, MessageSchema)
    def delete(self, name: str):
        """Delete a group (its machines keep their own workflows)."""
        with write_transaction(db.session):
            store.delete_group(db.session, group_or_404(name, for_update=True))
        return {"success": True, "message": f"Group {name} deleted"}


@bp.route("/api/v1/groups/match")
@bp.arguments(GroupMatchQuerySchema(), location="query")
@bp.response(200, MatchEnvelope)
def match(args: dict[str, Any]):
    """Dry run: which group a MAC (and the facts given) would get, and why. Changes nothing.

    A known node's stored facts and tags are used, each overridden by a fact given here.
    """
    node = find_node(db.session, args["mac"])
    base = Facts.of_node(node, node.tags) if node is not None else Facts(mac=args["mac"])
    tags = args["tags"].split(",") if "tags" in args else None
    facts = facts_with(
        base,
        tags=tags,
        arch=args.get("arch"),
        platform=args.get("platform"),
        manufacturer=args.get("manufacturer"),
        product=args.get("product"),
        serial=args.get("serial"),
        uuid=args.get("uuid"),
    )
    result = dry_run(
        group_cache().rules(db.session),
        facts,
        node_id=node.id if node else None,
        node_workflow_id=node.workflow_id if node else None,
    )
    db.session.rollback()
    return {"success": True, "data": result}

"""Operator actions on the node inventory, shared by the API and the CLI.

Each function runs inside the caller's write transaction and leaves committing to it.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm import selectinload

from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import transition
from provisioner.domain.validation import MAX_TAGS
from provisioner.domain.workflows import WorkflowStore
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import NodeTag
from provisioner.store.reads import page_with_total


class InventoryError(Exception):
    """An operator request that cannot be carried out; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def check_workflow(workflows: WorkflowStore, workflow_id: str | None) -> None:
    """Refuse a workflow id that has no file."""
    if workflow_id is not None and not workflows.exists(workflow_id):
        raise InventoryError("workflow_id", f"Unknown workflow {workflow_id!r}")


def create_node(
    session: Session, fields: dict[str, Any], workflows: WorkflowStore, now: datetime
) -> Node:
    """Register a node by hand; it starts ``discovered``."""
    check_workflow(workflows, fields.get("workflow_id"))
    if session.scalar(select(Node.id).where(Node.mac_address == fields["mac_address"])):
        raise InventoryError(
            "mac_address", f"A node with MAC {fields['mac_address']} already exists", 409
        )
    tags = fields.pop("tags", [])
    node = add_discovered_node(
        session, now, triggered_by=Trigger.ADMIN, comment="registered by operator", **fields
    )
    node.tag_rows = [NodeTag(tag=tag) for tag in sorted(set(tags))]
    return node


def add_discovered_node(
    session: Session, now: datetime, *, triggered_by: str, comment: str, **fields: Any
) -> Node:
    """Insert a new node in state ``discovered`` with the first entry of its state log."""
    node = Node(
        **fields,
        state=State.DISCOVERED,
        install_attempts=0,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
    )
    session.add(node)
    session.flush()
    session.add(
        NodeStateLog(
            node_id=node.id,
            from_state=None,
            to_state=State.DISCOVERED,
            triggered_by=triggered_by,
            comment=comment,
            created_at=now,
        )
    )
    return node


def update_node(
    node: Node, fields: dict[str, Any], workflows: WorkflowStore, now: datetime
) -> Node:
    """Change a node's descriptive fields (never its state)."""
    if "workflow_id" in fields:
        check_workflow(workflows, fields["workflow_id"])
    for key, value in fields.items():
        setattr(node, key, value)
    node.updated_at = now
    return node


def set_state(
    session: Session,
    node: Node,
    state: str,
    now: datetime,
    *,
    comment: str | None = None,
    force: bool = False,
) -> NodeStateLog:
    """An operator's state change, through the lifecycle rules."""
    return transition(
        session, node, state, triggered_by=Trigger.ADMIN, now=now, comment=comment, force=force
    )


def reprovision(
    session: Session, node: Node, now: datetime, *, comment: str | None = None
) -> NodeStateLog:
    """Mark the node for reprovisioning and queue its reinstall (``reprovision → pending``):
    its next PXE boot gets the installer. Both moves go through the lifecycle rules."""
    set_state(session, node, State.REPROVISION, now, comment=comment)
    return set_state(session, node, State.PENDING, now, comment=comment)


def add_tags(node: Node, tags: list[str]) -> None:
    """Add tags the node does not have yet, up to ``MAX_TAGS`` on the node."""
    have = set(node.tags)
    new = set(tags) - have
    if len(have) + len(new) > MAX_TAGS:
        raise InventoryError(
            "tags", f"A node carries at most {MAX_TAGS} tags (has {len(have)}, adding {len(new)})"
        )
    for tag in sorted(new):
        node.tag_rows.append(NodeTag(tag=tag))


def remove_tag(node: Node, tag: str) -> bool:
    """Remove one tag; tell whether the node had it."""
    for row in node.tag_rows:
        if row.tag == tag:
            node.tag_rows.remove(row)
            return True
    return False


def list_nodes(
    session: Session, *, state: str | None, tag: str | None, limit: int, offset: int
) -> tuple[list[Node], int]:
    """A page of nodes (oldest first) and the total matching the filters."""
    query = select(Node)
    if state:
        query = query.where(Node.state == state)
    if tag:
        query = query.where(Node.id.in_(select(NodeTag.node_id).where(NodeTag.tag == tag)))
    return page_with_total(
        session,
        query.options(selectinload(Node.tag_rows)),
        order_by=(Node.created_at, Node.id),
        limit=limit,
        offset=offset,
    )


def history(session: Session, node: Node) -> list[NodeStateLog]:
    """The node's state changes, oldest first."""
    return list(
        session.scalars(
            select(NodeStateLog).where(NodeStateLog.node_id == node.id).order_by(NodeStateLog.id)
        )
    )

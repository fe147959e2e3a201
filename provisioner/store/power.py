"""Power settings and power actions in the database: plain reads and writes."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from provisioner.models import Node
from provisioner.models import NodePower
from provisioner.models import NodeTag
from provisioner.models import PowerAction


def settings_of(session: Session, node_id: str) -> NodePower | None:
    """The node's power settings, or None (``manual``)."""
    return session.get(NodePower, node_id)


def save_settings(
    session: Session,
    node_id: str,
    *,
    driver: str,
    address: str,
    username: str | None,
    password_encrypted: str | None,
    now: datetime,
) -> NodePower:
    """Insert or replace the node's settings; the last known state is forgotten."""
    row = session.get(NodePower, node_id)
    if row is None:
        row = NodePower(node_id=node_id)
        session.add(row)
    row.driver = driver
    row.address = address
    row.username = username
    row.password_encrypted = password_encrypted
    row.power_state = None
    row.power_state_at = None
    row.updated_at = now
    return row


def delete_settings(session: Session, node_id: str) -> bool:
    """Back to ``manual``; tell whether there was anything to delete."""
    row = session.get(NodePower, node_id)
    if row is None:
        return False
    session.delete(row)
    return True


def note_state(session: Session, node_id: str, state: str, now: datetime) -> None:
    """Remember the power state an action or a status check saw."""
    session.execute(
        update(NodePower)
        .where(NodePower.node_id == node_id)
        .values(power_state=state, power_state_at=now)
    )


def add_action(
    session: Session, node_id: str, action: str, requested_by: str, now: datetime
) -> PowerAction:
    """A queued action, its id known once this returns."""
    row = PowerAction(
        node_id=node_id, action=action, status="queued", requested_by=requested_by, created_at=now
    )
    session.add(row)
    session.flush()
    return row


def get_action(session: Session, action_id: int) -> PowerAction | None:
    return session.get(PowerAction, action_id)


def nodes_with_power(session: Session, drivers: Sequence[str]) -> list[str]:
    """Ids of the nodes whose driver is one of ``drivers``."""
    return list(session.scalars(select(NodePower.node_id).where(NodePower.driver.in_(drivers))))


def nodes_by_tag(session: Session, tag: str) -> list[Node]:
    """The nodes carrying ``tag``, oldest first."""
    query = (
        select(Node)
        .where(Node.id.in_(select(NodeTag.node_id).where(NodeTag.tag == tag)))
        .order_by(Node.created_at, Node.id)
    )
    return list(session.scalars(query))


def unfinished_actions(session: Session, node_id: str | None = None) -> list[PowerAction]:
    """Actions still queued or running (of one node, or all)."""
    query = select(PowerAction).where(PowerAction.status.in_(("queued", "running")))
    if node_id is not None:
        query = query.where(PowerAction.node_id == node_id)
    return list(session.scalars(query.order_by(PowerAction.id)))

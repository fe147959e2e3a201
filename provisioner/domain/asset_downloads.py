"""Recording a finished asset download as one event of the node that fetched it."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.domain.events import EventStatus
from provisioner.domain.events import EventType
from provisioner.domain.events import record_event
from provisioner.models import Node
from provisioner.store.transactions import write_transaction


def node_at(session: Session | scoped_session[Session], ip: str | None) -> Node | None:
    """The node last seen booting from ``ip`` (the boot path stores each node's address)."""
    if not ip:
        return None
    query = (
        select(Node)
        .where(Node.ip_address == ip)
        .order_by(Node.last_seen_at.desc().nulls_last(), Node.id)
        .limit(1)
    )
    return session.scalars(query).first()


def record_download(
    session: Session | scoped_session[Session],
    ip: str | None,
    *,
    message_for: Callable[[str | None], str],
    complete: bool,
    metadata: dict[str, Any],
    now: datetime,
) -> str | None:
    """Add one ``asset_served`` event to the node at ``ip``; return its id, or ``None``
    when no node has that address (the download is only logged)."""
    with write_transaction(session) as tx:
        node = node_at(tx, ip)
        if node is None:
            return None
        record_event(
            tx,
            node,
            EventType.ASSET_SERVED,
            now=now,
            status=EventStatus.SUCCESS if complete else EventStatus.FAILED,
            message=message_for(node.workflow_id),
            metadata=metadata,
            ip_address=ip,
            note_on_node=False,
        )
        return node.id

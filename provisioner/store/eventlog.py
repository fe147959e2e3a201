"""Reading the event log: a node's events newest first, and the stream across all nodes."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.models import NodeEvent
from provisioner.store.reads import page_with_total


def node_events(
    session: Session, node_id: str, *, event_type: str | None, limit: int, offset: int
) -> tuple[list[NodeEvent], int]:
    """A page of one node's events, newest first (``id`` breaks equal timestamps)."""
    query = select(NodeEvent).where(NodeEvent.node_id == node_id)
    if event_type:
        query = query.where(NodeEvent.event_type == event_type)
    newest_first = (NodeEvent.created_at.desc(), NodeEvent.id.desc())
    return page_with_total(session, query, order_by=newest_first, limit=limit, offset=offset)


def event_stream(
    session: Session,
    *,
    since: int,
    event_type: str | None,
    node_id: str | None,
    limit: int,
) -> tuple[list[NodeEvent], int]:
    """Events after cursor ``since``, oldest first, and the cursor to ask with next time.

    The cursor is the last event id seen. With no new events the cursor stays where it was,
    so a follower polling with ``next_cursor`` neither misses nor repeats an event.
    """
    query = select(NodeEvent).where(NodeEvent.id > since)
    if event_type:
        query = query.where(NodeEvent.event_type == event_type)
    if node_id:
        query = query.where(NodeEvent.node_id == node_id)
    page = list(session.scalars(query.order_by(NodeEvent.id).limit(limit)))
    return page, (page[-1].id if page else since)

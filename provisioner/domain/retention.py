"""Pruning the event log: old events, and heartbeats beyond a per-node allowance.

Events of a provisioning episode still under way (the node pending, installing or
install_failed) are never deleted, whatever their age: they explain what is happening now.
Deletes run in bounded batches, each its own short write transaction.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

from sqlalchemy import and_
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import not_
from sqlalchemy import select
from sqlalchemy import union
from sqlalchemy.orm import Session

from provisioner.domain.events import EventType
from provisioner.domain.lifecycle import OPEN_EPISODE_STATES
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.postgres import RETENTION_LOCK
from provisioner.store.postgres import exclusive_job
from provisioner.store.transactions import write_transaction

log = logging.getLogger(__name__)

BATCH_SIZE = 5000


@dataclass
class PruneResult:
    expired: int = 0
    heartbeats: int = 0


def _protected():
    """Events of an open provisioning episode."""
    return (
        select(NodeEvent.id)
        .join(Node, Node.id == NodeEvent.node_id)
        .where(
            Node.state.in_(OPEN_EPISODE_STATES),
            Node.episode_started_at.is_not(None),
            NodeEvent.created_at >= Node.episode_started_at,
        )
    )


Progress = Callable[[int], None]


def _delete_in_batches(session: Session, candidates, progress: Progress | None) -> int:
    deleted = 0
    while True:
        with write_transaction(session):
            ids = session.scalars(candidates.limit(BATCH_SIZE)).all()
            if ids:
                session.execute(delete(NodeEvent).where(NodeEvent.id.in_(ids)))
        deleted += len(ids)
        if progress is not None:
            progress(len(ids))
        if len(ids) < BATCH_SIZE:
            return deleted


def _expired(retention_days: float, now: datetime):
    cutoff = now - timedelta(days=retention_days)
    return select(NodeEvent.id).where(
        NodeEvent.created_at < cutoff, not_(NodeEvent.id.in_(_protected()))
    )


def _surplus_heartbeats(keep: int):
    ranked = select(
        NodeEvent.id,
        func.row_number()
        .over(partition_by=NodeEvent.node_id, order_by=NodeEvent.id.desc())
        .label("rank"),
    ).where(NodeEvent.event_type == EventType.HEARTBEAT)
    ranked = ranked.subquery()
    return select(ranked.c.id).where(
        and_(ranked.c.rank > keep, not_(ranked.c.id.in_(_protected())))
    )


def prune_events(
    session: Session,
    *,
    retention_days: float,
    heartbeat_keep: int,
    now: datetime,
    progress: Progress | None = None,
) -> PruneResult:
    """Apply both retention rules once; ``progress`` hears how many rows each batch deleted."""
    result = PruneResult()
    with exclusive_job(session, RETENTION_LOCK) as mine:
        if not mine:
            log.info("prune: another instance is pruning; skipped")
            return result
        return _prune(session, retention_days, heartbeat_keep, now, result, progress)


def count_prunable(
    session: Session, *, retention_days: float, heartbeat_keep: int, now: datetime
) -> int:
    """How many events a prune would delete now (for a progress bar)."""
    queries = []
    if retention_days > 0:
        queries.append(_expired(retention_days, now))
    if heartbeat_keep > 0:
        queries.append(_surplus_heartbeats(heartbeat_keep))
    if not queries:
        return 0
    return session.scalar(select(func.count()).select_from(union(*queries).subquery())) or 0


def _prune(
    session: Session,
    retention_days: float,
    heartbeat_keep: int,
    now: datetime,
    result: PruneResult,
    progress: Progress | None,
) -> PruneResult:
    if retention_days > 0:
        expired = _expired(retention_days, now)
        result.expired = _delete_in_batches(session, expired, progress)
    if heartbeat_keep > 0:
        surplus = _surplus_heartbeats(heartbeat_keep)
        result.heartbeats = _delete_in_batches(session, surplus, progress)
    if result.expired or result.heartbeats:
        log.info(
            "prune: deleted %d expired event(s) and %d surplus heartbeat(s)",
            result.expired,
            result.heartbeats,
        )
    return result

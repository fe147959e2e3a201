"""The stalled-installs feed: which nodes monitoring should look at now, and why.

A node is listed when it is stalled now (installing past a deadline, not yet swept), when its
current provisioning episode has timed out and not completed since (pending again, installing
again, or install_failed), or when it was installed but never reported ``first_boot``.
"""

from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm import selectinload

from provisioner.events import EventType
from provisioner.lifecycle import OPEN_EPISODE_STATES
from provisioner.lifecycle import State
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.sweeper import Reason
from provisioner.sweeper import StallRules
from provisioner.sweeper import stall_of
from provisioner.sweeper import stalled_condition
from provisioner.timeutil import as_utc


@dataclass
class StalledNode:
    """A node as the feed shows it: every node field, plus why it is listed."""

    node: Node
    reason: str
    stalled_since: datetime
    elapsed_seconds: float
    timeouts: int
    max_install_attempts: int

    def __getattr__(self, name: str) -> Any:
        return getattr(self.node, name)


def _stalled_now(session: Session, rules: StallRules, now: datetime) -> list[tuple]:
    nodes = session.scalars(
        select(Node).options(selectinload(Node.tag_rows)).where(stalled_condition(rules, now))
    ).all()
    return [
        (node, stall.reason, stall.since)
        for node in nodes
        if (stall := stall_of(node, rules, now))
    ]


def _timed_out_episodes(session: Session, exclude: set[str]) -> list[tuple]:
    nodes = session.scalars(
        select(Node)
        .options(selectinload(Node.tag_rows))
        .where(Node.install_timeouts > 0, Node.state.in_(OPEN_EPISODE_STATES))
    ).all()
    nodes = [node for node in nodes if node.id not in exclude]
    if not nodes:
        return []
    newest = (
        select(func.max(NodeEvent.id))
        .where(
            NodeEvent.event_type == EventType.INSTALL_TIMEOUT,
            NodeEvent.node_id.in_([node.id for node in nodes]),
        )
        .group_by(NodeEvent.node_id)
    )
    last_timeout = {
        event.node_id: event
        for event in session.scalars(select(NodeEvent).where(NodeEvent.id.in_(newest)))
    }
    items = []
    for node in nodes:
        event = last_timeout.get(node.id)
        meta = (event.metadata_ or {}) if event else {}
        since = meta.get("stalled_since")
        stalled_since = as_utc(datetime.fromisoformat(since)) if since else node.state_changed_at
        items.append((node, meta.get("reason", Reason.INSTALL_TIMEOUT), stalled_since))
    return items


def _no_first_boot(session: Session, rules: StallRules, now: datetime) -> list[tuple]:
    limit = timedelta(minutes=rules.first_boot_minutes)
    nodes = session.scalars(
        select(Node)
        .options(selectinload(Node.tag_rows))
        .where(Node.state == State.INSTALLED, Node.state_changed_at <= now - limit)
    ).all()
    return [(node, Reason.NO_FIRST_BOOT, node.state_changed_at + limit) for node in nodes]


def stalled_feed(
    session: Session, rules: StallRules, now: datetime, *, limit: int
) -> tuple[list[StalledNode], int]:
    """The listed nodes, oldest stall first (at most ``limit``), and how many there are."""
    found: list[tuple] = []
    if rules.detects_installs:
        found = _stalled_now(session, rules, now)
        found += _timed_out_episodes(session, {node.id for node, _, _ in found})
    if rules.first_boot_minutes > 0:
        found += _no_first_boot(session, rules, now)
    found.sort(key=lambda item: (item[2], item[0].id))
    items = [
        StalledNode(
            node=node,
            reason=reason,
            stalled_since=since,
            elapsed_seconds=round((now - since).total_seconds(), 3),
            timeouts=node.install_timeouts or 0,
            max_install_attempts=rules.max_attempts,
        )
        for node, reason, since in found[:limit]
    ]
    return items, len(found)

"""The stalled-installs feed: which nodes monitoring should look at now, and why.

A node is listed when it is stalled now (installing past a deadline, not yet swept), when its
current provisioning episode has timed out and not completed since (pending again, installing
again, or install_failed), or when it was installed but never reported ``first_boot``.
"""

from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.domain.events import EventType
from provisioner.domain.lifecycle import OPEN_EPISODE_STATES
from provisioner.domain.lifecycle import State
from provisioner.domain.sweeper import Reason
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import stall_of
from provisioner.domain.sweeper import stalled_condition
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.nodes_repo import node_mapping
from provisioner.store.nodes_repo import node_rows
from provisioner.timeutil import as_utc


class StalledNode(dict[str, Any]):
    """A node as the feed shows it: every node field (``nodes_repo.node_mapping``) plus why
    it is listed: ``reason``, ``stalled_since``, ``elapsed_seconds``, ``timeouts`` and
    ``max_install_attempts``. Read as a mapping (the JSON schema) or by attribute (the CLI,
    the dashboard's templates)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# Candidates are found as plain rows (id, reason, since): only the page shown is loaded in
# full (as plain rows too), so a feed of thousands of stalls costs little more than a page.
_ROW = (Node.id, Node.state, Node.state_changed_at, Node.last_event_at)


def _stalled_now(
    session: Session, rules: StallRules, now: datetime, limit: int
) -> tuple[list[tuple], int]:
    """The first ``limit`` nodes stalled now, oldest stall first, and how many there are."""
    condition = stalled_condition(rules, now)
    if rules.silence_minutes > 0:  # deadlines differ per node: decided row by row
        rows = session.execute(select(*_ROW).where(condition)).all()
        found = [
            (row.id, stall.reason, stall.since)
            for row in rows
            if (stall := stall_of(row, rules, now))
        ]
        return found, len(found)
    # The overall timeout alone: every deadline is state_changed_at + the timeout, so the
    # database orders, limits and counts (in one statement, one snapshot).
    timeout = timedelta(minutes=rules.timeout_minutes)
    rows = session.execute(
        select(Node.id, Node.state_changed_at, func.count().over().label("total"))
        .where(condition)
        .order_by(Node.state_changed_at, Node.id)
        .limit(limit)
    ).all()
    found = [(row.id, Reason.INSTALL_TIMEOUT, row.state_changed_at + timeout) for row in rows]
    return found, rows[0].total if rows else 0


def _timed_out_episodes(session: Session, rules: StallRules, now: datetime) -> list[tuple]:
    """Nodes whose open episode timed out, except those stalled now (listed as such)."""
    query = select(Node.id, Node.state_changed_at).where(
        Node.install_timeouts > 0, Node.state.in_(OPEN_EPISODE_STATES)
    )
    if rules.detects_installs:
        query = query.where(~stalled_condition(rules, now))
    rows = session.execute(query).all()
    if not rows:
        return []
    newest = (
        select(func.max(NodeEvent.id))
        .where(
            NodeEvent.event_type == EventType.INSTALL_TIMEOUT,
            NodeEvent.node_id.in_([row.id for row in rows]),
        )
        .group_by(NodeEvent.node_id)
    )
    last_timeout = dict(
        session.execute(
            select(NodeEvent.node_id, NodeEvent.metadata_).where(NodeEvent.id.in_(newest))
        ).all()
    )
    items = []
    for row in rows:
        meta = last_timeout.get(row.id) or {}
        since = meta.get("stalled_since")
        stalled_since = as_utc(datetime.fromisoformat(since)) if since else row.state_changed_at
        items.append((row.id, meta.get("reason", Reason.INSTALL_TIMEOUT), stalled_since))
    return items


def _no_first_boot(session: Session, rules: StallRules, now: datetime) -> list[tuple]:
    limit = timedelta(minutes=rules.first_boot_minutes)
    rows = session.execute(
        select(Node.id, Node.state_changed_at).where(
            Node.state == State.INSTALLED, Node.state_changed_at <= now - limit
        )
    ).all()
    return [(row.id, Reason.NO_FIRST_BOOT, row.state_changed_at + limit) for row in rows]


def stalled_feed(
    session: Session, rules: StallRules, now: datetime, *, limit: int
) -> tuple[list[StalledNode], int]:
    """The listed nodes, oldest stall first (at most ``limit``), and how many there are."""
    found: list[tuple] = []
    total = 0
    if rules.detects_installs:
        # Only this source comes cut to ``limit``: any of its nodes on the page is among its
        # own first ``limit``.
        stalled, total = _stalled_now(session, rules, now, limit)
        episodes = _timed_out_episodes(session, rules, now)
        found += stalled + episodes
        total += len(episodes)
    if rules.first_boot_minutes > 0:
        late = _no_first_boot(session, rules, now)
        found += late
        total += len(late)
    found.sort(key=lambda item: (item[2], item[0]))
    page = found[:limit]
    nodes = {row.id: row for row in node_rows(session, [node_id for node_id, _, _ in page])}
    items = [
        StalledNode(
            node_mapping(nodes[node_id]),
            reason=reason,
            stalled_since=since,
            elapsed_seconds=round((now - since).total_seconds(), 3),
            timeouts=nodes[node_id].install_timeouts or 0,
            max_install_attempts=rules.max_attempts,
        )
        for node_id, reason, since in page
        if node_id in nodes
    ]
    return items, total

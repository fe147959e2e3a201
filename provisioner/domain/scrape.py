"""Counts read from the database when metrics are scraped: one grouped query each."""

from datetime import datetime
from datetime import timedelta

from sqlalchemy import ColumnElement
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.domain.lifecycle import OPEN_EPISODE_STATES
from provisioner.domain.lifecycle import State
from provisioner.domain.sweeper import Reason
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import stalled_condition
from provisioner.models import Node


def node_counts(session: Session) -> dict[str, int]:
    """Nodes per lifecycle state, every state present (0 when none)."""
    counts = dict.fromkeys((state.value for state in State), 0)
    for state, count in session.execute(select(Node.state, func.count()).group_by(Node.state)):
        counts[state] = count
    return counts


def stalled_conditions(rules: StallRules, now: datetime) -> dict[str, ColumnElement[bool]]:
    """The nodes the stalled feed lists, as one condition per reason the rules enable.

    Stalled-now installs are counted under ``install_timeout`` (the feed tells the two rules
    apart node by node; a gauge only needs to say something is wrong).
    """
    conditions: dict[str, ColumnElement[bool]] = {}
    if rules.detects_installs:
        reason = Reason.INSTALL_TIMEOUT if rules.timeout_minutes > 0 else Reason.INSTALL_SILENCE
        conditions[reason] = stalled_condition(rules, now) | (
            (Node.install_timeouts > 0) & Node.state.in_(OPEN_EPISODE_STATES)
        )
    if rules.first_boot_minutes > 0:
        cutoff = now - timedelta(minutes=rules.first_boot_minutes)
        conditions[Reason.NO_FIRST_BOOT] = (Node.state == State.INSTALLED) & (
            Node.state_changed_at <= cutoff
        )
    return conditions


def stalled_counts(session: Session, rules: StallRules, now: datetime) -> dict[str, int]:
    """How many nodes the stalled feed lists, per reason."""
    counts = {Reason.INSTALL_TIMEOUT: 0, Reason.INSTALL_SILENCE: 0, Reason.NO_FIRST_BOOT: 0}
    for reason, condition in stalled_conditions(rules, now).items():
        counts[reason] = session.scalar(select(func.count()).where(condition)) or 0
    return counts


def stalled_among(
    session: Session, rules: StallRules, now: datetime, node_ids: list[str]
) -> set[str]:
    """Which of ``node_ids`` the stalled feed lists."""
    conditions = list(stalled_conditions(rules, now).values())
    if not conditions or not node_ids:
        return set()
    query = select(Node.id).where(Node.id.in_(node_ids), or_(*conditions))
    return set(session.scalars(query))

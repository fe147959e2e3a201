"""Counts read from the database when metrics are scraped: one grouped query each."""

from datetime import datetime
from datetime import timedelta

from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.lifecycle import OPEN_EPISODE_STATES
from provisioner.lifecycle import State
from provisioner.models import Node
from provisioner.sweeper import Reason
from provisioner.sweeper import StallRules
from provisioner.sweeper import stalled_condition


def node_counts(session: Session) -> dict[str, int]:
    """Nodes per lifecycle state, every state present (0 when none)."""
    counts = dict.fromkeys((state.value for state in State), 0)
    for state, count in session.execute(select(Node.state, func.count()).group_by(Node.state)):
        counts[state] = count
    return counts


def stalled_counts(session: Session, rules: StallRules, now: datetime) -> dict[str, int]:
    """How many nodes the stalled feed lists, per reason.

    Stalled-now installs are counted under ``install_timeout`` (the feed tells the two rules
    apart node by node; a gauge only needs to say something is wrong).
    """
    counts = {Reason.INSTALL_TIMEOUT: 0, Reason.INSTALL_SILENCE: 0, Reason.NO_FIRST_BOOT: 0}
    if rules.detects_installs:
        reason = Reason.INSTALL_TIMEOUT if rules.timeout_minutes > 0 else Reason.INSTALL_SILENCE
        listed = stalled_condition(rules, now) | (
            (Node.install_timeouts > 0) & Node.state.in_(OPEN_EPISODE_STATES)
        )
        counts[reason] = session.scalar(select(func.count()).where(listed)) or 0
    if rules.first_boot_minutes > 0:
        cutoff = now - timedelta(minutes=rules.first_boot_minutes)
        counts[Reason.NO_FIRST_BOOT] = (
            session.scalar(
                select(func.count()).where(
                    Node.state == State.INSTALLED, Node.state_changed_at <= cutoff
                )
            )
            or 0
        )
    return counts

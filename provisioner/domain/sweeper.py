"""Stalled installs: the rules that find them, the timeout handler, and the sweep.

An installing node is *stalled* once ``INSTALL_TIMEOUT_MINUTES`` have passed since it entered
``installing`` (``install_timeout``), or, with ``INSTALL_SILENCE_MINUTES`` set, once the node
has sent nothing for that long (``install_silence``). A stalled install is handled exactly like
a reported failure (``lifecycle.record_install_failure``) plus an ``install_timeout`` event.

The sweeper, a boot request and another server instance may all notice the same stall; the
guarded update in ``lifecycle.transition`` makes sure only the first one is applied.
"""

import logging
import time
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import Row
from sqlalchemy import and_
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.domain.events import EventStatus
from provisioner.domain.events import EventType
from provisioner.domain.events import insert_events
from provisioner.domain.events import record_event
from provisioner.domain.lifecycle import Move
from provisioner.domain.lifecycle import SeenInstall
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import count_failure
from provisioner.domain.lifecycle import failure_effect
from provisioner.domain.lifecycle import record_install_failure
from provisioner.domain.lifecycle import record_install_failures
from provisioner.models import Node
from provisioner.store.transactions import write_transaction

log = logging.getLogger(__name__)

#: Nodes timed out per write transaction: small enough that a concurrent report never waits
#: long for SQLite's single write lock (a batch takes about 30 ms on a small host, more
#: under load), large enough that what each batch costs whatever its size (statements,
#: commit, waiting for the lock) does not dominate the sweep.
BATCH_SIZE = 300


class Reason:
    INSTALL_TIMEOUT = "install_timeout"
    INSTALL_SILENCE = "install_silence"
    NO_FIRST_BOOT = "no_first_boot"


@dataclass(frozen=True)
class StallRules:
    """The configured limits, in minutes; 0 turns a rule off."""

    timeout_minutes: float
    silence_minutes: float = 0
    first_boot_minutes: float = 0
    max_attempts: int = 3

    @classmethod
    def from_config(cls, config: dict) -> "StallRules":
        return cls(
            timeout_minutes=config["INSTALL_TIMEOUT_MINUTES"],
            silence_minutes=config["INSTALL_SILENCE_MINUTES"],
            first_boot_minutes=config["FIRST_BOOT_TIMEOUT_MINUTES"],
            max_attempts=config["MAX_INSTALL_ATTEMPTS"],
        )

    @property
    def detects_installs(self) -> bool:
        return self.timeout_minutes > 0 or self.silence_minutes > 0


@dataclass(frozen=True)
class Stall:
    """Why and since when an installing node is stalled."""

    reason: str
    since: datetime
    minutes: float

    @property
    def error(self) -> str:
        if self.reason == Reason.INSTALL_SILENCE:
            return f"No report from the installer for {self.minutes:g} minutes"
        return f"Installation timed out after {self.minutes:g} minutes"


def stall_of(node: "Node | Row", rules: StallRules, now: datetime) -> Stall | None:
    """The stall of an installing node at ``now``, or None; the overall timeout wins ties."""
    if node.state != State.INSTALLING:
        return None
    stalls = []
    if rules.timeout_minutes > 0:
        deadline = node.state_changed_at + timedelta(minutes=rules.timeout_minutes)
        stalls.append(Stall(Reason.INSTALL_TIMEOUT, deadline, rules.timeout_minutes))
    if rules.silence_minutes > 0:
        last_heard = max(node.state_changed_at, node.last_event_at or node.state_changed_at)
        deadline = last_heard + timedelta(minutes=rules.silence_minutes)
        stalls.append(Stall(Reason.INSTALL_SILENCE, deadline, rules.silence_minutes))
    due = [stall for stall in stalls if now >= stall.since]
    return min(due, key=lambda stall: stall.since) if due else None


def stalled_condition(rules: StallRules, now: datetime) -> ColumnElement[bool]:
    """SQL for "installing and past a deadline", the set form of ``stall_of`` (the two agree:
    tests/api/test_failure_rule_parity.py)."""
    conditions = []
    if rules.timeout_minutes > 0:
        conditions.append(Node.state_changed_at <= now - timedelta(minutes=rules.timeout_minutes))
    if rules.silence_minutes > 0:
        cutoff = now - timedelta(minutes=rules.silence_minutes)
        conditions.append(
            and_(
                Node.state_changed_at <= cutoff,
                or_(Node.last_event_at.is_(None), Node.last_event_at <= cutoff),
            )
        )
    return and_(Node.state == State.INSTALLING, or_(*conditions))


def handle_stall(
    session: Session,
    node: Node,
    stall: Stall,
    *,
    rules: StallRules,
    triggered_by: str,
    now: datetime,
) -> None:
    """Count the stall as a failed attempt and record an ``install_timeout`` event.

    Runs in the caller's write transaction. Raises ``ConcurrentTransition`` (writing nothing
    of its own) if another request moved the node first.
    """
    before = node.state
    record_install_failure(
        session,
        node,
        stall.error,
        max_attempts=rules.max_attempts,
        triggered_by=triggered_by,
        now=now,
        metadata=_stall_metadata(stall),
    )
    node.install_timeouts = (node.install_timeouts or 0) + 1
    record_event(
        session,
        node,
        EventType.INSTALL_TIMEOUT,
        now=now,
        status=EventStatus.FAILED,
        message=stall.error,
        metadata=_stall_metadata(stall),
        effect=failure_effect(before, node.state, node.install_attempts, rules.max_attempts),
    )


@dataclass
class SweepResult:
    """What one sweep did."""

    timed_out: int = 0
    retried: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    #: Nodes sent back to pending for a retry (POWER_CYCLE_STALLED power-cycles them).
    retried_ids: list[str] = field(default_factory=list)


_CANDIDATE_COLUMNS = (
    Node.id,
    Node.state,
    Node.state_changed_at,
    Node.last_event_at,
    Node.install_attempts,
)


def _sweep_batch(session: Session, rules: StallRules, now: datetime, result: SweepResult) -> bool:
    """Time out one batch in one short transaction; tell whether there may be more.

    Set-based: the batch is read as plain rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
    another instance's sweeper takes other rows), moved with one guarded UPDATE per target
    state (``lifecycle.record_install_failures``), and its state-log and event rows are
    inserted in bulk. The batch is taken in ``state_changed_at`` order alone, which the
    ``(state, state_changed_at)`` index yields without sorting. The same rule as
    ``handle_stall``, without a round trip per node.
    """
    handled = result.timed_out
    with write_transaction(session):
        stalled = stalled_condition(rules, now)
        batch = session.execute(
            select(*_CANDIDATE_COLUMNS)
            .where(stalled)
            .order_by(Node.state_changed_at)
            .limit(BATCH_SIZE)
            .with_for_update(skip_locked=True)
        ).all()
        seen = {row.id: _seen(row, stall) for row in batch if (stall := stall_of(row, rules, now))}
        moved = record_install_failures(
            session,
            list(seen.values()),
            max_attempts=rules.max_attempts,
            triggered_by=Trigger.SWEEPER,
            now=now,
            still=stalled,
            also_set={
                "install_timeouts": Node.install_timeouts + 1,
                "last_event_type": EventType.INSTALL_TIMEOUT,
                "last_event_status": EventStatus.FAILED,
                "last_event_at": now,
            },
        )
        events = [_timeout_event(seen[move.node_id], move, rules.max_attempts) for move in moved]
        for move in moved:
            result.timed_out += 1
            result.retried += move.to_state == State.PENDING
            if move.to_state == State.PENDING:
                result.retried_ids.append(move.node_id)
            result.failed += move.to_state == State.INSTALL_FAILED
        insert_events(
            session,
            events,
            same={
                "event_type": EventType.INSTALL_TIMEOUT,
                "status": EventStatus.FAILED,
                "created_at": now,
            },
        )
    result.batches += 1
    return len(batch) == BATCH_SIZE and result.timed_out > handled


def _stall_metadata(stall: Stall) -> dict[str, str]:
    return {"reason": stall.reason, "stalled_since": stall.since.isoformat()}


def _seen(row: Row, stall: Stall) -> SeenInstall:
    return SeenInstall(
        node_id=row.id,
        state_changed_at=row.state_changed_at,
        install_attempts=row.install_attempts,
        error=stall.error,
        metadata=_stall_metadata(stall),
    )


def _timeout_event(seen: SeenInstall, move: Move, max_attempts: int) -> dict[str, Any]:
    """The columns of a sweep's ``install_timeout`` event that differ from node to node."""
    attempts = count_failure(seen.install_attempts, seen.error, max_attempts).attempts
    return {
        "node_id": seen.node_id,
        "message": seen.error,
        "metadata": seen.metadata,
        "effect": failure_effect(move.from_state, move.to_state, attempts, max_attempts),
    }


def sweep_stalled_installs(session: Session, rules: StallRules, now: datetime) -> SweepResult:
    """Time out every stalled install, in bounded batches, each its own transaction."""
    result = SweepResult()
    if not rules.detects_installs:
        return result
    started = time.perf_counter()
    while _sweep_batch(session, rules, now, result):
        pass
    result.seconds = time.perf_counter() - started
    if result.timed_out:
        log.info(
            "sweep: %d stalled install(s) timed out (%d retried, %d failed) in %.3f s, "
            "%d batch(es)",
            result.timed_out,
            result.retried,
            result.failed,
            result.seconds,
            result.batches,
        )
    return result

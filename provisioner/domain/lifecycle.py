"""The node lifecycle: states, the transition table, ``transition()`` and the failure/retry rule.

Plain functions over a SQLAlchemy session, no Flask: the API, the boot endpoint, node reports
and the sweeper all move nodes through here, so every change writes its ``NodeStateLog`` row
in the caller's transaction and no caller can invent a move of its own.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import false
from sqlalchemy import func
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.store.changes import changes
from provisioner.store.writes import insert_rows


class State(StrEnum):
    """Where a node is in its life."""

    DISCOVERED = "discovered"
    PENDING = "pending"
    INSTALLING = "installing"
    INSTALLED = "installed"
    ACTIVE = "active"
    INSTALL_FAILED = "install_failed"
    REPROVISION = "reprovision"
    RETIRED = "retired"


STATE_NAMES = [state.value for state in State]


class Trigger(StrEnum):
    """Who or what caused a state change (``NodeStateLog.triggered_by``)."""

    ADMIN = "admin"
    BOOT = "boot"
    NODE_REPORT = "node_report"
    SWEEPER = "sweeper"
    SYSTEM = "system"
    #: A machine group's ``auto_install`` (an operator's standing order).
    GROUP = "group"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.DISCOVERED: frozenset({State.PENDING, State.RETIRED}),
    State.PENDING: frozenset({State.INSTALLING, State.RETIRED}),
    State.INSTALLING: frozenset(
        {State.INSTALLED, State.PENDING, State.INSTALL_FAILED, State.RETIRED}
    ),
    State.INSTALL_FAILED: frozenset({State.PENDING, State.RETIRED}),
    State.INSTALLED: frozenset({State.ACTIVE, State.REPROVISION, State.RETIRED}),
    State.ACTIVE: frozenset({State.REPROVISION, State.RETIRED}),
    State.REPROVISION: frozenset({State.PENDING, State.RETIRED}),
    State.RETIRED: frozenset(),
}


#: Entering these states sets the node's install progress: a new attempt starts from 0.
INSTALL_PROGRESS_ON_ENTRY: dict[State, int] = {State.INSTALLING: 0, State.INSTALLED: 100}


@dataclass(frozen=True)
class Move:
    """A state change inserted in bulk (no ORM object), as the webhook outbox reads it."""

    node_id: str
    from_state: str
    to_state: str
    comment: str | None
    created_at: datetime


class TransitionError(Exception):
    """Base class for a state change that cannot be made."""


class IllegalTransition(TransitionError):
    """The move is not in the transition table (or leaves ``retired``)."""

    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        self.valid = valid_transitions(current)
        super().__init__(f"Cannot move node from {current} to {target}")


#: States in which a provisioning episode is still open (not completed, not abandoned).
OPEN_EPISODE_STATES = frozenset({State.PENDING, State.INSTALLING, State.INSTALL_FAILED})


class ConcurrentTransition(TransitionError):
    """Another request changed the node's state first; nothing was written."""

    def __init__(self, node_id: str, expected: str) -> None:
        super().__init__(f"Node {node_id} left state {expected} while this change was made")


def valid_transitions(state: str) -> list[str]:
    """The states a node in ``state`` may move to, sorted."""
    return sorted(TRANSITIONS[State(state)])


def check_transition(current: str, target: str, *, force: bool = False) -> None:
    """Raise ``IllegalTransition`` unless ``current → target`` is allowed."""
    if target not in STATE_NAMES:
        raise ValueError(f"Unknown state {target!r} (states: {', '.join(STATE_NAMES)})")
    if current == State.RETIRED or current == target:
        raise IllegalTransition(current, target)
    if not force and State(target) not in TRANSITIONS[State(current)]:
        raise IllegalTransition(current, target)


def starts_episode(current: str, target: str, triggered_by: str) -> bool:
    """An operator sending a node to ``pending`` starts a new provisioning episode.

    Moving an installing node back to pending is a retry within the episode, so the attempt
    counter is kept there; from every other state it is a fresh start. A forced move
    straight into ``installing`` from outside an episode starts one too.
    """
    if triggered_by not in (Trigger.ADMIN, Trigger.GROUP):
        return False
    if target == State.PENDING:
        return current != State.INSTALLING
    return target == State.INSTALLING and current not in OPEN_EPISODE_STATES


def transition(
    session: Session,
    node: Node,
    target: str,
    *,
    triggered_by: str,
    now: datetime,
    comment: str | None = None,
    metadata: dict[str, Any] | None = None,
    force: bool = False,
) -> NodeStateLog:
    """Move ``node`` to ``target`` and log it, in the caller's transaction.

    The state column is changed by a guarded ``UPDATE ... WHERE state = <seen state> AND
    state_changed_at = <seen time>``: if another request moved the node since it was read,
    no row matches and ``ConcurrentTransition`` is raised, so a move is never applied twice.
    """
    current = node.state
    check_transition(current, target, force=force)
    if starts_episode(current, target, triggered_by):
        node.install_attempts = 0
        node.install_timeouts = 0
        node.last_install_error = None
        node.episode_started_at = now
    if target in INSTALL_PROGRESS_ON_ENTRY:
        node.progress = INSTALL_PROGRESS_ON_ENTRY[State(target)]
    session.flush()
    result = session.execute(
        update(Node)
        .where(
            Node.id == node.id,
            Node.state == current,
            Node.state_changed_at == node.state_changed_at,
        )
        .values(state=target, state_changed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise ConcurrentTransition(node.id, current)
    seconds_in_state = (now - node.state_changed_at).total_seconds()
    changes(session).transitions.append((current, target, seconds_in_state))
    for key, value in (("state", target), ("state_changed_at", now), ("updated_at", now)):
        set_committed_value(node, key, value)
    log_metadata = dict(metadata or {})
    if force and target not in TRANSITIONS[State(current)]:
        log_metadata["forced"] = True
    entry = NodeStateLog(
        node_id=node.id,
        from_state=current,
        to_state=target,
        triggered_by=triggered_by,
        comment=comment,
        metadata_=log_metadata or None,
        created_at=now,
    )
    session.add(entry)
    changes(session).rows.append(entry)
    return entry


def failure_target(attempts: int, max_attempts: int) -> State:
    """Where an installing node goes after its ``attempts``-th failed attempt."""
    return State.PENDING if attempts < max_attempts else State.INSTALL_FAILED


def failure_comment(error: str, attempts: int, max_attempts: int) -> str:
    return f"{error} (attempt {attempts} of {max_attempts})"


def failure_effect(before: str, after: str, attempts: int, max_attempts: int) -> str:
    """What a failed attempt did, as its event's ``effect`` says it."""
    return f"{before}→{after} (attempt {attempts} of {max_attempts})"


@dataclass(frozen=True)
class Failure:
    """The failure rule's verdict on one failed install attempt."""

    attempts: int
    target: State
    comment: str


def count_failure(attempts_before: int, error: str, max_attempts: int) -> Failure:
    """The one failure rule: a failed attempt is counted, and the node retries (pending)
    while attempts remain, else it is ``install_failed``. ``record_install_failure`` (one
    ORM node) and ``record_install_failures`` (a set, in SQL) both carry it out."""
    attempts = attempts_before + 1
    return Failure(
        attempts,
        failure_target(attempts, max_attempts),
        failure_comment(error, attempts, max_attempts),
    )


@dataclass(frozen=True)
class SeenInstall:
    """An installing node as a set-based caller read (and holds) it, and why it failed."""

    node_id: str
    state_changed_at: datetime
    install_attempts: int
    error: str
    metadata: dict[str, Any] | None = None


def record_install_failures(
    session: Session,
    seen: list[SeenInstall],
    *,
    max_attempts: int,
    triggered_by: str,
    now: datetime,
    still: ColumnElement[bool],
    also_set: dict[str, Any] | None = None,
) -> list[Move]:
    """The set form of ``record_install_failure``, for many installing nodes at once: the
    same rule (``count_failure``) carried out in SQL (tests/api/test_failure_rule_parity.py
    proves the rows equal).

    The caller holds the rows of ``seen`` from its read on (``BEGIN IMMEDIATE`` on SQLite,
    ``SELECT ... FOR UPDATE`` on PostgreSQL) and chose them by the condition ``still``.
    One ``UPDATE ... WHERE id IN (...) AND (state = 'installing' AND <still>) RETURNING id``
    per (target, error) moves them: checking ``still`` again costs nothing per row and
    leaves alone a node that changed since it was read, as ``transition`` would. The
    state-log rows of the nodes moved are inserted in one statement
    (``writes.insert_rows``); those moves are returned.
    """
    groups: dict[tuple[State, str], list[SeenInstall]] = {}
    for item in seen:
        target = count_failure(item.install_attempts, item.error, max_attempts).target
        groups.setdefault((target, item.error), []).append(item)
    moves, rows = [], []
    for (target, error), items in groups.items():
        by_id = {item.node_id: item for item in items}
        moved = session.scalars(
            update(Node)
            .where(
                Node.id.in_(list(by_id)),
                # Inside a function, so that SQLite's planner looks the nodes up by their
                # ids: it would rather serve these terms from the (state, state_changed_at)
                # index, walking every installing node on every call.
                func.coalesce(and_(Node.state == State.INSTALLING, still), false()),
            )
            .values(
                state=target,
                state_changed_at=now,
                updated_at=now,
                install_attempts=Node.install_attempts + 1,
                last_install_error=error,
                **(also_set or {}),
            )
            .returning(Node.id)
            .execution_options(synchronize_session=False)
        ).all()
        for node_id in moved:
            item = by_id[node_id]
            failure = count_failure(item.install_attempts, error, max_attempts)
            moves.append(Move(node_id, State.INSTALLING, target, failure.comment, now))
            rows.append(
                {
                    "node_id": node_id,
                    "to_state": target,
                    "comment": failure.comment,
                    "metadata": item.metadata,
                }
            )
            seconds = (now - item.state_changed_at).total_seconds()
            changes(session).transitions.append((State.INSTALLING, target, seconds))
    if rows:
        insert_rows(
            session,
            NodeStateLog.__table__,
            rows,
            same={"from_state": State.INSTALLING, "triggered_by": triggered_by, "created_at": now},
        )
        changes(session).rows.extend(moves)
    return moves


def record_install_failure(
    session: Session,
    node: Node,
    error: str,
    *,
    max_attempts: int,
    triggered_by: str,
    now: datetime,
    metadata: dict[str, Any] | None = None,
) -> NodeStateLog:
    """Count a failed install attempt: retry (back to pending) while attempts remain.

    The one rule for a failure, whoever noticed it: a node's report, the sweeper's timeout or
    a boot past the deadline. Only valid for an installing node.
    """
    failure = count_failure(node.install_attempts, error, max_attempts)
    if node.state != State.INSTALLING:
        raise IllegalTransition(node.state, failure.target)
    node.install_attempts = failure.attempts
    node.last_install_error = error
    return transition(
        session,
        node,
        failure.target,
        triggered_by=triggered_by,
        now=now,
        comment=failure.comment,
        metadata=metadata,
    )

"""The state machine: the transition table, force, the episode rule, failures and the guard."""

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.orm import Session

from provisioner.domain.lifecycle import TRANSITIONS
from provisioner.domain.lifecycle import ConcurrentTransition
from provisioner.domain.lifecycle import IllegalTransition
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import record_install_failure
from provisioner.domain.lifecycle import transition
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.store.transactions import write_transaction

#: The table exactly as issue 2 writes it, so the code's table is checked against the spec.
SPEC_TABLE = {
    "discovered": {"pending", "retired"},
    "pending": {"installing", "retired"},
    "installing": {"installed", "pending", "install_failed", "retired"},
    "install_failed": {"pending", "retired"},
    "installed": {"active", "reprovision", "retired"},
    "active": {"reprovision", "retired"},
    "reprovision": {"pending", "retired"},
    "retired": set(),
}
ALL_PAIRS = list(itertools.product(State, State))
#: Through the database: every move the table allows (each writes its row and log) and one
#: refused move from each state; tests/unit/test_lifecycle.py checks all 64 pairs.
DATABASE_PAIRS = [(c, t) for c, t in ALL_PAIRS if t in TRANSITIONS[c]] + [
    (c, next(t for t in State if t not in TRANSITIONS[c])) for c in State
]
EPISODE_SOURCES = [State.DISCOVERED, State.REPROVISION, State.INSTALL_FAILED]
_macs = itertools.count(1)


def add_node(state: str, now, *, attempts: int = 0, error: str | None = None) -> Node:
    """Store a node in ``state`` directly, as a fixture for one move."""
    number = next(_macs)
    node = Node(
        mac_address=f"52:54:00:00:{number // 256:02x}:{number % 256:02x}",
        state=state,
        install_attempts=attempts,
        last_install_error=error,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
    )
    with write_transaction(db.session):
        db.session.add(node)
    return node


def stored(node_id: str) -> dict:
    """The node's row as the database has it, bypassing the session's identity map."""
    row = db.session.execute(
        text(
            "SELECT state, install_attempts, last_install_error, state_changed_at "
            "FROM nodes WHERE id = :id"
        ),
        {"id": node_id},
    ).one()
    db.session.rollback()
    return dict(row._mapping)


def logs(node_id: str) -> list[NodeStateLog]:
    """The node's state log rows, oldest first."""
    query = select(NodeStateLog).where(NodeStateLog.node_id == node_id).order_by(NodeStateLog.id)
    entries = list(db.session.scalars(query))
    db.session.rollback()
    return entries


def move(node: Node, target: str, now, **kwargs) -> NodeStateLog:
    """Run one transition in its own write transaction (an operator's, unless told)."""
    kwargs.setdefault("triggered_by", Trigger.ADMIN)
    with write_transaction(db.session):
        return transition(db.session, node, target, now=now, **kwargs)


def test_table_matches_the_spec():
    """``TRANSITIONS`` is the issue's table, row for row."""
    assert {str(k): {str(v) for v in vs} for k, vs in TRANSITIONS.items()} == SPEC_TABLE


@pytest.mark.parametrize(("current", "target"), DATABASE_PAIRS, ids=lambda s: str(s))
def test_every_pair_is_allowed_or_refused_by_the_table(app, clock, current, target):
    """Each of the 64 moves succeeds iff the table allows it, and only then writes a log."""
    with app.app_context():
        node = add_node(current, clock())
        later = clock.advance(minutes=5)
        if target in TRANSITIONS[current]:
            entry = move(node, target, later, comment="by the table")
            row = stored(node.id)
            assert row["state"] == target
            assert node.state == target
            assert [(e.from_state, e.to_state) for e in logs(node.id)] == [(current, target)]
            assert entry.triggered_by == Trigger.ADMIN
            assert entry.comment == "by the table"
            assert entry.created_at == later
            assert node.state_changed_at == later
            assert (entry.metadata_ or {}).get("forced") is None
        else:
            with pytest.raises(IllegalTransition) as info:
                move(node, target, later)
            assert info.value.valid == sorted(TRANSITIONS[current])
            assert stored(node.id)["state"] == current
            assert logs(node.id) == []


@pytest.mark.parametrize("target", [State.PENDING], ids=str)  # all: tests/unit
def test_retired_cannot_be_left_even_with_force(app, clock, target):
    """No move out of ``retired`` is possible, forced or not."""
    with app.app_context():
        node = add_node(State.RETIRED, clock())
        with pytest.raises(IllegalTransition) as info:
            move(node, target, clock.advance(minutes=1), force=True)
        assert info.value.valid == []
        assert stored(node.id)["state"] == State.RETIRED
        assert logs(node.id) == []


@pytest.mark.parametrize(
    ("current", "target"),
    [  # every such pair: tests/unit/test_lifecycle.py
        (State.DISCOVERED, State.INSTALLED),
        (State.ACTIVE, State.INSTALLING),
        (State.INSTALL_FAILED, State.ACTIVE),
    ],
    ids=str,
)
def test_force_makes_any_other_move_and_logs_it_as_forced(app, clock, current, target):
    """``force`` allows a move outside the table and marks the log entry ``forced``."""
    with app.app_context():
        node = add_node(current, clock())
        move(node, target, clock.advance(minutes=1), force=True, metadata={"ticket": "OPS-1"})
        assert stored(node.id)["state"] == target
        (entry,) = logs(node.id)
        assert (entry.from_state, entry.to_state) == (current, target)
        assert entry.metadata_ == {"ticket": "OPS-1", "forced": True}


@pytest.mark.parametrize("force", [False, True])
def test_unknown_target_state_is_refused(app, clock, force):
    """A state name outside the eight is never written, even with ``force``."""
    with app.app_context():
        node = add_node(State.DISCOVERED, clock())
        with pytest.raises(ValueError):
            move(node, "sleeping", clock.advance(minutes=1), force=force)
        assert stored(node.id)["state"] == State.DISCOVERED
        assert logs(node.id) == []


def test_forced_move_that_the_table_allows_is_not_marked_forced(app, clock):
    """``force`` on a legal move records an ordinary move."""
    with app.app_context():
        node = add_node(State.DISCOVERED, clock())
        move(node, State.PENDING, clock.advance(minutes=1), force=True)
        (entry,) = logs(node.id)
        assert not (entry.metadata_ or {}).get("forced")


def test_state_log_and_state_changed_at_are_written_together(app, clock):
    """A move stores the new state, ``state_changed_at`` and its log row in one commit."""
    with app.app_context():
        node = add_node(State.DISCOVERED, clock())
        later = clock.advance(minutes=3)
        move(node, State.PENDING, later, triggered_by=Trigger.SYSTEM, metadata={"why": "test"})
        db.session.expire_all()
        fresh = db.session.get(Node, node.id)
        assert fresh.state == State.PENDING
        assert fresh.state_changed_at == later
        (entry,) = logs(node.id)
        assert entry.triggered_by == Trigger.SYSTEM
        assert entry.metadata_ == {"why": "test"}
        assert entry.created_at == later


def test_refused_move_inside_a_transaction_leaves_nothing_behind(app, clock):
    """An illegal move rolls back the whole write transaction."""
    with app.app_context():
        node = add_node(State.ACTIVE, clock(), attempts=2, error="disk")
        with pytest.raises(IllegalTransition):
            with write_transaction(db.session):
                node.last_install_error = "changed in the same transaction"
                transition(
                    db.session, node, State.PENDING, triggered_by=Trigger.ADMIN, now=clock()
                )
        assert stored(node.id)["last_install_error"] == "disk"


# -- the provisioning episode -------------------------------------------------------------


@pytest.mark.parametrize("source", EPISODE_SOURCES, ids=str)
def test_operator_move_to_pending_starts_a_new_episode(app, clock, source):
    """An operator's move to pending resets the attempt counter and the last error."""
    with app.app_context():
        node = add_node(source, clock(), attempts=3, error="kernel panic")
        move(node, State.PENDING, clock.advance(minutes=1))
        row = stored(node.id)
        assert row["state"] == State.PENDING
        assert row["install_attempts"] == 0
        assert row["last_install_error"] is None


@pytest.mark.parametrize("source", [State.INSTALL_FAILED], ids=str)
@pytest.mark.parametrize("trigger", [Trigger.SWEEPER], ids=str)  # every one: tests/unit
def test_non_operator_move_to_pending_keeps_the_counter(app, clock, source, trigger):
    """Only an operator starts an episode; other triggers keep attempts and error."""
    with app.app_context():
        node = add_node(source, clock(), attempts=2, error="timeout")
        move(node, State.PENDING, clock.advance(minutes=1), triggered_by=trigger)
        row = stored(node.id)
        assert (row["install_attempts"], row["last_install_error"]) == (2, "timeout")


@pytest.mark.parametrize(
    ("current", "target", "trigger"),
    [
        (State.PENDING, State.INSTALLING, Trigger.BOOT),
        (State.PENDING, State.INSTALLING, Trigger.ADMIN),
        (State.INSTALLING, State.PENDING, Trigger.ADMIN),
        (State.INSTALLING, State.PENDING, Trigger.SWEEPER),
        (State.INSTALLING, State.INSTALLED, Trigger.NODE_REPORT),
        (State.INSTALLING, State.INSTALL_FAILED, Trigger.ADMIN),
        (State.INSTALL_FAILED, State.RETIRED, Trigger.ADMIN),
        (State.INSTALLED, State.REPROVISION, Trigger.ADMIN),
        (State.DISCOVERED, State.RETIRED, Trigger.ADMIN),
    ],
    ids=str,
)
def test_nothing_else_resets_the_counter(app, clock, current, target, trigger):
    """Starting an install, a retry or any other move keeps attempts and the last error."""
    with app.app_context():
        node = add_node(current, clock(), attempts=2, error="timeout")
        move(node, target, clock.advance(minutes=1), triggered_by=trigger)
        row = stored(node.id)
        assert row["state"] == target
        assert (row["install_attempts"], row["last_install_error"]) == (2, "timeout")


# -- failures and retries -----------------------------------------------------------------


def fail_install(node: Node, error: str, now, max_attempts: int = 3) -> NodeStateLog:
    """Record one failed install attempt in its own write transaction."""
    with write_transaction(db.session):
        return record_install_failure(
            db.session,
            node,
            error,
            max_attempts=max_attempts,
            triggered_by=Trigger.NODE_REPORT,
            now=now,
        )


@pytest.mark.parametrize(
    ("attempts_before", "expected_state"),
    [(0, State.PENDING), (1, State.PENDING), (2, State.INSTALL_FAILED)],
)
def test_install_failure_retries_while_attempts_remain(
    app, clock, attempts_before, expected_state
):
    """A failure counts an attempt; below the maximum it retries, at it the node fails."""
    with app.app_context():
        node = add_node(State.INSTALLING, clock(), attempts=attempts_before)
        entry = fail_install(node, "disk not found", clock.advance(minutes=1), max_attempts=3)
        row = stored(node.id)
        assert row["state"] == expected_state
        assert row["install_attempts"] == attempts_before + 1
        assert row["last_install_error"] == "disk not found"
        assert (entry.from_state, entry.to_state) == (State.INSTALLING, expected_state)
        assert entry.triggered_by == Trigger.NODE_REPORT
        assert "disk not found" in entry.comment


def test_single_attempt_budget_fails_at_once(app, clock):
    """With ``max_attempts=1`` the first failure is final."""
    with app.app_context():
        node = add_node(State.INSTALLING, clock())
        fail_install(node, "boom", clock.advance(minutes=1), max_attempts=1)
        assert stored(node.id)["state"] == State.INSTALL_FAILED


def test_attempts_accumulate_across_retries_in_one_episode(app, clock):
    """Fail, boot again, fail again...: the counter climbs until the node is install_failed."""
    with app.app_context():
        node = add_node(State.PENDING, clock())
        for attempt in (1, 2, 3):
            move(node, State.INSTALLING, clock.advance(minutes=1), triggered_by=Trigger.BOOT)
            fail_install(node, f"error {attempt}", clock.advance(minutes=1), max_attempts=3)
            assert stored(node.id)["install_attempts"] == attempt
        row = stored(node.id)
        assert row["state"] == State.INSTALL_FAILED
        assert row["last_install_error"] == "error 3"
        move(node, State.PENDING, clock.advance(minutes=1))
        assert stored(node.id)["install_attempts"] == 0


@pytest.mark.parametrize("state", [s for s in State if s != State.INSTALLING], ids=str)
def test_install_failure_only_applies_to_an_installing_node(app, clock, state):
    """A failure for a node that is not installing is refused and counts nothing."""
    with app.app_context():
        node = add_node(state, clock(), attempts=1, error="old")
        with pytest.raises(IllegalTransition):
            fail_install(node, "late report", clock.advance(minutes=1))
        row = stored(node.id)
        assert (row["state"], row["install_attempts"], row["last_install_error"]) == (
            state,
            1,
            "old",
        )
        assert logs(node.id) == []


# -- the guarded update -------------------------------------------------------------------


def test_stale_state_raises_concurrent_transition(app, clock):
    """A node moved by another session since it was read cannot be moved again from there."""
    with app.app_context():
        node = add_node(State.DISCOVERED, clock())
        stale = db.session.get(Node, node.id)
        with Session(db.engine) as other:
            with write_transaction(other):
                theirs = other.get(Node, node.id)
                transition(other, theirs, State.PENDING, triggered_by=Trigger.ADMIN, now=clock())
        with pytest.raises(ConcurrentTransition):
            move(stale, State.PENDING, clock.advance(minutes=1))
        assert stored(node.id)["state"] == State.PENDING
        assert len(logs(node.id)) == 1


def test_same_state_reached_again_still_raises_concurrent_transition(app, clock):
    """The guard also compares ``state_changed_at``, so a node that left and came back is seen."""
    with app.app_context():
        node = add_node(State.PENDING, clock())
        stale = db.session.get(Node, node.id)
        with Session(db.engine) as other:
            theirs = other.get(Node, node.id)
            for target, minutes in ((State.INSTALLING, 1), (State.PENDING, 2)):
                with write_transaction(other):
                    transition(
                        other,
                        theirs,
                        target,
                        triggered_by=Trigger.SYSTEM,
                        now=clock() + timedelta(minutes=minutes),
                    )
        assert stale.state == State.PENDING
        with pytest.raises(ConcurrentTransition):
            move(stale, State.INSTALLING, clock.advance(minutes=5), triggered_by=Trigger.BOOT)
        assert stored(node.id)["state"] == State.PENDING
        assert len(logs(node.id)) == 2

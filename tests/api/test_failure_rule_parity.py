"""The failure rule and the stall condition each exist once; their set forms carry them out.

Hypothesis generates nodes (state, attempts, timestamps) and clocks, on SQLite and
PostgreSQL, and checks:

- ``record_install_failures`` (one guarded UPDATE per target, bulk state-log insert) writes
  the node and state-log rows that ``record_install_failure`` (ORM, node by node) writes;
- the sweep (``sweep_stalled_installs``: ``_sweep_batch`` in SQL) writes the node, state-log
  and event rows that ``handle_stall`` writes node by node for each node ``stall_of`` finds;
- ``stalled_condition`` (SQL) selects exactly the nodes ``stall_of`` (Python) calls stalled,
  and the stalled feed's database-ordered branch gives each the same reason and deadline.
"""

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy import select

from provisioner.domain.lifecycle import SeenInstall
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import record_install_failure
from provisioner.domain.lifecycle import record_install_failures
from provisioner.domain.stalled_feed import _stalled_now
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import handle_stall
from provisioner.domain.sweeper import stall_of
from provisioner.domain.sweeper import stalled_condition
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.models import NodeStateLog
from provisioner.models import NodeTag
from provisioner.store.transactions import write_transaction

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

minutes = st.sampled_from([0, 0.5, 1, 7, 30])
rules = st.builds(
    StallRules,
    timeout_minutes=minutes,
    silence_minutes=minutes,
    max_attempts=st.integers(min_value=1, max_value=4),
).filter(lambda rules: rules.detects_installs)
#: Ages near the deadlines the rules can set (to the microsecond either side) and anywhere.
ages = st.one_of(
    st.tuples(st.sampled_from([0, 0.5, 1, 7, 30]), st.integers(min_value=-2, max_value=2)).map(
        lambda age: timedelta(minutes=age[0], microseconds=age[1])
    ),
    st.integers(min_value=-60, max_value=3600).map(lambda s: timedelta(seconds=s)),
)
nodes = st.fixed_dictionaries(
    {
        "state": st.just(State.INSTALLING) | st.sampled_from(list(State)),
        "install_attempts": st.integers(min_value=0, max_value=4),
        "install_timeouts": st.integers(min_value=0, max_value=2),
        "state_changed_age": ages,
        "last_event_age": st.none() | ages,
    }
)


def wipe(session) -> None:
    for table in (NodeEvent, NodeStateLog, NodeTag, Node):
        session.execute(delete(table))


def add_nodes(session, specs: list[dict[str, Any]], prefix: str) -> list[str]:
    """The nodes of ``specs``, numbered under ``prefix``; their ids."""
    ids = []
    for number, spec in enumerate(specs):
        node_id = f"{prefix}-{number:04d}"
        session.add(
            Node(
                id=node_id,
                mac_address=f"52:54:00:{prefix}:{number // 256:02x}:{number % 256:02x}",
                state=spec["state"],
                install_attempts=spec["install_attempts"],
                install_timeouts=spec["install_timeouts"],
                state_changed_at=NOW - spec["state_changed_age"],
                last_event_at=(
                    None if spec["last_event_age"] is None else NOW - spec["last_event_age"]
                ),
                created_at=NOW - timedelta(days=1),
                updated_at=NOW - timedelta(days=1),
            )
        )
        ids.append(node_id)
    return ids


def written(session, ids: list[str], prefix: str) -> list[Any]:
    """Every row about the nodes, node by node, with the ids and MAC prefix taken out."""
    out = []
    for node_id in ids:
        node = session.execute(select(Node.__table__).where(Node.id == node_id)).one()._asdict()
        logs = session.execute(
            select(NodeStateLog.__table__)
            .where(NodeStateLog.node_id == node_id)
            .order_by(NodeStateLog.id)
        ).all()
        events = session.execute(
            select(NodeEvent.__table__).where(NodeEvent.node_id == node_id).order_by(NodeEvent.id)
        ).all()
        out.append(
            {
                "node": node,
                "logs": [{k: v for k, v in r._asdict().items() if k != "id"} for r in logs],
                "events": [{k: v for k, v in r._asdict().items() if k != "id"} for r in events],
            }
        )
    text = json.dumps(out, default=str, sort_keys=True)
    return json.loads(text.replace(f"{prefix}-", "<node>-").replace(f":{prefix}:", ":<p>:"))


@given(
    specs=st.lists(nodes.map(lambda spec: spec | {"state": State.INSTALLING}), max_size=8),
    errors=st.lists(st.sampled_from(["disk full", "timed out"]), min_size=8, max_size=8),
    max_attempts=st.integers(min_value=1, max_value=4),
)
@HYPOTHESIS
def test_the_set_form_of_the_failure_rule_writes_what_the_node_form_writes(
    app, specs, errors, max_attempts
):
    with app.app_context(), write_transaction(db.session) as session:
        wipe(session)
        one_by_one, as_set = add_nodes(session, specs, "aa"), add_nodes(session, specs, "bb")
    with app.app_context():
        for node_id, error in zip(one_by_one, errors, strict=False):
            with write_transaction(db.session) as session:
                record_install_failure(
                    session,
                    session.get(Node, node_id),
                    error,
                    max_attempts=max_attempts,
                    triggered_by=Trigger.SWEEPER,
                    now=NOW,
                    metadata={"why": error},
                )
        with write_transaction(db.session) as session:
            seen = [
                SeenInstall(
                    node.id, node.state_changed_at, node.install_attempts, error, {"why": error}
                )
                for node, error in zip(
                    session.scalars(select(Node).where(Node.id.in_(as_set)).order_by(Node.id)),
                    errors,
                    strict=False,
                )
            ]
            moves = record_install_failures(
                session,
                seen,
                max_attempts=max_attempts,
                triggered_by=Trigger.SWEEPER,
                now=NOW,
                still=Node.state == State.INSTALLING,
            )
        assert len(moves) == len(specs)
        assert written(db.session, as_set, "bb") == written(db.session, one_by_one, "aa")
        db.session.rollback()


@given(specs=st.lists(nodes, max_size=10), rules=rules)
@HYPOTHESIS
def test_the_sweep_writes_what_handle_stall_writes_node_by_node(app, specs, rules):
    with app.app_context(), write_transaction(db.session) as session:
        wipe(session)
        one_by_one, swept = add_nodes(session, specs, "aa"), add_nodes(session, specs, "bb")
    with app.app_context():
        # The node-by-node path first: afterwards none of its nodes is stalled, so the sweep
        # only finds the other twins.
        stalled = 0
        for node_id in one_by_one:
            with write_transaction(db.session) as session:
                node = session.get(Node, node_id)
                if stall := stall_of(node, rules, NOW):
                    handle_stall(
                        session, node, stall, rules=rules, triggered_by="sweeper", now=NOW
                    )
                    stalled += 1
        result = sweep_stalled_installs(db.session, rules, NOW)
        assert result.timed_out == stalled
        assert written(db.session, swept, "bb") == written(db.session, one_by_one, "aa")
        db.session.rollback()


@given(specs=st.lists(nodes, max_size=12), rules=rules)
@HYPOTHESIS
def test_stalled_condition_selects_the_nodes_stall_of_finds(app, specs, rules):
    with app.app_context(), write_transaction(db.session) as session:
        wipe(session)
        add_nodes(session, specs, "aa")
    with app.app_context():
        session = db.session
        everyone = session.scalars(select(Node)).all()  # as stored: the database's precision
        in_python = {node.id: stall_of(node, rules, NOW) for node in everyone}
        in_sql = set(session.scalars(select(Node.id).where(stalled_condition(rules, NOW))))
        assert in_sql == {node_id for node_id, stall in in_python.items() if stall}
        found, total = _stalled_now(session, rules, NOW, limit=len(everyone) + 1)
        assert total == len(in_sql)
        assert {(node_id, reason, since) for node_id, reason, since in found} == {
            (node_id, stall.reason, stall.since) for node_id, stall in in_python.items() if stall
        }
        session.rollback()

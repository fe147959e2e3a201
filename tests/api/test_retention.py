"""Event retention: expiry by age, the per-node heartbeat allowance, open episodes, the CLI."""

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select

from provisioner.domain import retention
from provisioner.domain.retention import prune_events
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow

RETENTION_DAYS = 90
HEARTBEAT_KEEP = 3
_macs = itertools.count(1)


@pytest.fixture
def app_config(app_config: dict) -> dict:
    """Pin the retention limits the tests are written for."""
    app_config.update(EVENT_RETENTION_DAYS=RETENTION_DAYS, HEARTBEAT_KEEP_PER_NODE=HEARTBEAT_KEEP)
    return app_config


def add_node(app, state: str, now, episode_started_at=None) -> str:
    """Store a node directly in ``state``; return its id."""
    with app.app_context(), write_transaction(db.session):
        node = Node(
            mac_address=f"52:54:00:30:00:{next(_macs):02x}",
            state=state,
            install_attempts=0,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
            episode_started_at=episode_started_at,
        )
        db.session.add(node)
        db.session.flush()
        return node.id


def add_events(app, node_id: str, *events: tuple[str, object]) -> list[int]:
    """Store ``(event_type, created_at)`` events in order; return their ids."""
    with app.app_context(), write_transaction(db.session):
        rows = [
            NodeEvent(node_id=node_id, event_type=kind, status="success", created_at=at)
            for kind, at in events
        ]
        db.session.add_all(rows)
        db.session.flush()
        return [row.id for row in rows]


def remaining(app, node_id: str | None = None) -> list[int]:
    """Ids of the events still stored (of one node, or all), ascending."""
    query = select(NodeEvent.id).order_by(NodeEvent.id)
    if node_id is not None:
        query = query.where(NodeEvent.node_id == node_id)
    with app.app_context():
        return list(db.session.scalars(query))


def prune(app, now, *, days: float = RETENTION_DAYS, keep: int = HEARTBEAT_KEEP):
    with app.app_context():
        return prune_events(db.session, retention_days=days, heartbeat_keep=keep, now=now)


def ago(now, **kwargs):
    return now - timedelta(**kwargs)


def test_events_older_than_retention_are_deleted(app, clock):
    """Events past EVENT_RETENTION_DAYS go; younger ones, even by a second, stay."""
    now = clock()
    node = add_node(app, "active", ago(now, days=200))
    old, edge, young = add_events(
        app,
        node,
        ("boot_started", ago(now, days=150)),
        ("install_complete", ago(now, days=RETENTION_DAYS, seconds=1)),
        ("first_boot", ago(now, days=RETENTION_DAYS, seconds=-1)),
    )

    result = prune(app, now)

    assert (result.expired, result.heartbeats) == (2, 0)
    assert remaining(app) == [young]


@pytest.mark.parametrize("state", ["pending", "installing", "install_failed"])
def test_events_of_an_open_episode_are_kept_however_old(app, clock, state):
    """A node still being provisioned keeps its episode's events; older ones may go."""
    now = clock()
    node = add_node(app, state, ago(now, days=100), episode_started_at=ago(now, days=200))
    before, during, late = add_events(
        app,
        node,
        ("heartbeat", ago(now, days=300)),
        ("install_timeout", ago(now, days=200)),
        ("install_failed", ago(now, days=120)),
    )

    result = prune(app, now)

    assert result.expired == 1
    assert remaining(app) == [during, late]


@pytest.mark.parametrize("state", ["installed", "active", "reprovision", "retired"])
def test_a_closed_episode_is_not_protected(app, clock, state):
    """Once the episode is over its old events expire like any others."""
    now = clock()
    node = add_node(app, state, ago(now, days=100), episode_started_at=ago(now, days=200))
    add_events(app, node, ("install_complete", ago(now, days=150)))

    assert prune(app, now).expired == 1
    assert remaining(app) == []


def test_surplus_heartbeats_are_deleted_per_node_newest_kept(app, clock):
    """Each node keeps its newest HEARTBEAT_KEEP_PER_NODE heartbeats; other types are untouched."""
    now = clock()
    busy = add_node(app, "active", now)
    quiet = add_node(app, "active", now)
    busy_events = add_events(
        app,
        busy,
        *[("heartbeat", ago(now, minutes=60 - n)) for n in range(4)],
        ("first_boot", ago(now, minutes=50)),
        *[("heartbeat", ago(now, minutes=40 - n)) for n in range(3)],
        ("boot_started", ago(now, minutes=10)),
    )
    quiet_events = add_events(app, quiet, *[("heartbeat", ago(now, minutes=n)) for n in range(3)])

    result = prune(app, now)

    assert (result.expired, result.heartbeats) == (0, 4)
    assert remaining(app, busy) == busy_events[4:]
    assert remaining(app, quiet) == quiet_events


def test_heartbeats_of_an_open_episode_are_kept(app, clock):
    """The allowance never deletes an event of the episode under way."""
    now = clock()
    node = add_node(app, "installing", now, episode_started_at=ago(now, hours=1))
    older = add_events(app, node, *[("heartbeat", ago(now, hours=2, minutes=n)) for n in range(5)])
    current = add_events(app, node, *[("heartbeat", ago(now, minutes=n)) for n in range(5)])

    result = prune(app, now)

    assert result.heartbeats == 5
    assert remaining(app, node) == current
    assert not set(older) & set(remaining(app))


def test_zero_keeps_everything(app, clock):
    """EVENT_RETENTION_DAYS = 0 and HEARTBEAT_KEEP_PER_NODE = 0 turn both rules off."""
    now = clock()
    node = add_node(app, "active", now)
    ids = add_events(
        app,
        node,
        ("boot_started", ago(now, days=3650)),
        *[("heartbeat", ago(now, minutes=n)) for n in range(10)],
    )

    result = prune(app, now, days=0, keep=0)

    assert (result.expired, result.heartbeats) == (0, 0)
    assert remaining(app) == ids


def test_prune_works_past_its_batch_size(app, clock, monkeypatch):
    """Deletes in several batches take everything due, and only that."""
    monkeypatch.setattr(retention, "BATCH_SIZE", 3)
    now = clock()
    node = add_node(app, "active", now)
    add_events(app, node, *[("install_progress", ago(now, days=100 + n)) for n in range(10)])
    add_events(app, node, *[("heartbeat", ago(now, minutes=30 - n)) for n in range(9)])
    kept = add_events(
        app,
        node,
        ("first_boot", ago(now, minutes=5)),
        *[("heartbeat", ago(now, minutes=n)) for n in range(HEARTBEAT_KEEP)],
    )

    result = prune(app, now)

    assert (result.expired, result.heartbeats) == (10, 9)
    assert remaining(app) == kept


def test_prune_twice_deletes_nothing_more(app, clock):
    """A second pass at the same moment finds nothing left to delete."""
    now = clock()
    node = add_node(app, "active", now)
    add_events(app, node, ("boot_started", ago(now, days=100)))
    add_events(app, node, *[("heartbeat", ago(now, minutes=n)) for n in range(5)])
    first = prune(app, now)

    second = prune(app, now)

    assert (first.expired, first.heartbeats) == (1, 2)
    assert (second.expired, second.heartbeats) == (0, 0)


def test_prune_command(app, runner):
    """``provisioner prune`` applies the configured rules once, on the wall clock."""
    now = utcnow()
    node = add_node(app, "active", ago(now, days=400))
    add_events(app, node, ("boot_started", ago(now, days=RETENTION_DAYS + 10)))
    add_events(app, node, *[("heartbeat", ago(now, minutes=10 - n)) for n in range(5)])
    kept = remaining(app)[-HEARTBEAT_KEEP:]

    result = runner.invoke(args=["prune"])

    assert result.exit_code == 0, result.output
    assert "deleted 1 expired event(s), 2 heartbeat(s)" in result.output
    assert remaining(app) == kept

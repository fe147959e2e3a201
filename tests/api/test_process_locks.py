"""The scheduler's lease: one process per database runs the scheduled jobs."""

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from provisioner import scheduler
from provisioner.extensions import db
from provisioner.scheduler import run_sweep
from provisioner.scheduler import start_scheduler
from provisioner.scheduler import stop_scheduler
from provisioner.store.process_locks import SchedulerLease


@pytest.fixture
def engines(app):
    """Two engines on the app's database, as two processes would have."""
    with app.app_context():
        url = db.engine.url
    made = [create_engine(url, poolclass=NullPool) for _ in range(2)]
    yield made
    for engine in made:
        engine.dispose()


def test_only_one_lease_is_held_and_a_standby_takes_over(engines):
    """The first taker holds the lease; the second waits until the first releases it."""
    first, second = (SchedulerLease(engine) for engine in engines)
    try:
        assert first.held()
        assert not second.held()
        assert first.held(), "the holder keeps it"
        first.release()
        assert second.held()
        assert not first.held()
    finally:
        first.release()
        second.release()


def test_a_standby_scheduler_does_not_run_the_jobs(build_app, clock):
    """Of two started schedulers on one database, only the lease holder sweeps."""
    from api.test_scheduler import add_node  # the same stalled install the scheduler tests use
    from api.test_scheduler import node_state

    leader, standby = build_app(), build_app()
    node_id = add_node(leader, clock())
    clock.advance(minutes=120)
    start_scheduler(leader)
    start_scheduler(standby)
    try:
        for app in (leader, standby):
            app.extensions[scheduler.EXTENSION_KEY].pause()
        run_sweep(standby)
        assert node_state(standby, node_id) == ("installing", 0)
        run_sweep(leader)
        assert node_state(leader, node_id) == ("pending", 1)
    finally:
        stop_scheduler(leader)
        stop_scheduler(standby)

"""The APScheduler jobs: built by the factory but not started, their settings, start and stop."""

import threading
from datetime import timedelta

import pytest
from apscheduler.events import EVENT_JOB_ERROR
from apscheduler.events import EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from provisioner import scheduler
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.models import NodeStateLog
from provisioner.scheduler import run_prune
from provisioner.scheduler import run_sweep
from provisioner.scheduler import start_scheduler
from provisioner.scheduler import stop_scheduler
from provisioner.store.transactions import write_transaction

TIMEOUT = 30


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """A 30-minute timeout, plus whatever a test parametrizes."""
    app_config.update(INSTALL_TIMEOUT_MINUTES=TIMEOUT, MAX_INSTALL_ATTEMPTS=3)
    app_config.update(getattr(request, "param", {}))
    return app_config


@pytest.fixture
def jobs(app):
    """The app's scheduler started paused (so job defaults apply), stopped afterwards."""
    app.extensions[scheduler.EXTENSION_KEY].start(paused=True)
    yield {job.id: job for job in app.extensions[scheduler.EXTENSION_KEY].get_jobs()}
    stop_scheduler(app)


def settings(**values):
    """Build this test's app with ``values`` on top of the module's settings."""
    return pytest.mark.parametrize("app_config", [values], indirect=True, ids=["settings"])


def the_scheduler(app) -> BackgroundScheduler:
    return app.extensions[scheduler.EXTENSION_KEY]


def add_node(app, since, state: str = "installing") -> str:
    """Store a node directly in ``state`` since ``since``; return its id."""
    with app.app_context(), write_transaction(db.session):
        node = Node(
            mac_address="52:54:00:40:00:01",
            state=state,
            install_attempts=0,
            created_at=since,
            updated_at=since,
            state_changed_at=since,
        )
        db.session.add(node)
        db.session.flush()
        return node.id


def node_state(app, node_id: str) -> tuple[str, int]:
    with app.app_context():
        node = db.session.get(Node, node_id)
        return node.state, node.install_attempts


def test_factory_builds_a_scheduler_it_does_not_start(app):
    """create_app holds a BackgroundScheduler with its jobs, not running."""
    built = the_scheduler(app)

    assert isinstance(built, BackgroundScheduler)
    assert not built.running
    assert {job.id for job in built.get_jobs()} == {
        "sweep_stalled_installs",
        "prune_events",
        "refresh_power_states",  # POWER_STATUS_INTERVAL_SECONDS (docs/power.md)
    }


@settings(SWEEP_INTERVAL_SECONDS="0.5")
def test_sweep_job_settings(app, jobs):
    """The sweep runs run_sweep(app) every SWEEP_INTERVAL_SECONDS, coalesced, one at a time."""
    job = jobs["sweep_stalled_installs"]

    assert job.func is run_sweep
    assert job.args == (app,)
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == timedelta(seconds=0.5)
    assert (job.coalesce, job.max_instances) == (True, 1)


def test_prune_job_settings(app, jobs):
    """Pruning runs run_prune(app) once a day, coalesced, one at a time."""
    job = jobs["prune_events"]

    assert job.func is run_prune
    assert job.args == (app,)
    assert job.trigger.interval == timedelta(days=1)
    assert (job.coalesce, job.max_instances) == (True, 1)


def test_start_and_stop(app):
    """start_scheduler starts the app's scheduler; stop_scheduler stops it, twice safely."""
    started = start_scheduler(app)
    try:
        assert started is the_scheduler(app)
        assert started.running
        assert started.get_job("sweep_stalled_installs").next_run_time is not None
    finally:
        stop_scheduler(app)

    assert not the_scheduler(app).running
    stop_scheduler(app)
    assert not the_scheduler(app).running


@settings(SWEEP_INTERVAL_SECONDS=0.1)
def test_started_scheduler_sweeps(app, clock):
    """Once started, the sweep job runs on its own and times out a stalled install."""
    node_id = add_node(app, clock())
    clock.advance(minutes=TIMEOUT)
    finished = threading.Event()
    outcomes = []

    def on_job(event) -> None:
        if event.job_id == "sweep_stalled_installs":
            outcomes.append(event.exception)
            finished.set()

    the_scheduler(app).add_listener(on_job, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    start_scheduler(app)
    try:
        assert finished.wait(timeout=10), "the sweep job did not run"
    finally:
        stop_scheduler(app)

    assert outcomes[0] is None
    assert node_state(app, node_id) == ("pending", 1)


def test_cli_commands_do_not_start_the_scheduler(app, runner):
    """Running a command builds the app but leaves its scheduler stopped."""
    result = runner.invoke(args=["sweep"])

    assert result.exit_code == 0, result.output
    assert not the_scheduler(app).running


def test_run_sweep_uses_the_app_clock(app, clock):
    """run_sweep times out with CLOCK's time: not before the deadline, at it exactly."""
    node_id = add_node(app, clock())
    clock.advance(minutes=TIMEOUT, seconds=-1)
    run_sweep(app)
    assert node_state(app, node_id) == ("installing", 0)
    clock.advance(seconds=1)

    run_sweep(app)

    assert node_state(app, node_id) == ("pending", 1)
    with app.app_context():
        event = db.session.scalars(
            select(NodeEvent).where(NodeEvent.event_type == "install_timeout")
        ).one()
        entry = db.session.scalars(select(NodeStateLog).order_by(NodeStateLog.id.desc())).first()
        assert event.created_at == clock()
        assert (entry.to_state, entry.triggered_by, entry.created_at) == (
            "pending",
            "sweeper",
            clock(),
        )


@settings(EVENT_RETENTION_DAYS=10, HEARTBEAT_KEEP_PER_NODE=0)
def test_run_prune_uses_the_app_clock_and_settings(app, clock):
    """run_prune expires events by CLOCK's time and the app's EVENT_RETENTION_DAYS."""
    node_id = add_node(app, clock(), "active")
    with app.app_context(), write_transaction(db.session):
        heartbeat = NodeEvent(node_id=node_id, event_type="heartbeat", status="success")
        heartbeat.created_at = clock()
        db.session.add(heartbeat)
    clock.advance(days=10, seconds=-1)
    run_prune(app)
    with app.app_context():
        assert len(db.session.scalars(select(NodeEvent.id)).all()) == 1
    clock.advance(seconds=2)

    run_prune(app)

    with app.app_context():
        assert db.session.scalars(select(NodeEvent.id)).all() == []

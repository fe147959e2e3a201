"""The in-process APScheduler 3 jobs: the stalled-install sweep, event pruning, webhooks.

``create_app`` builds the scheduler with its jobs but never starts it: only ``provisioner
serve`` and ``wsgi.py`` do, because the factory also runs for CLI commands and tests. Every
process sharing a database (workers, instances) starts its scheduler, but only the holder
of the database's scheduler lease (``process_locks.SchedulerLease``) runs the jobs; the
others stand by and take over when it stops. The sweep's guarded updates and ``SKIP
LOCKED`` webhook claims would keep even overlapping runs from counting anything twice.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from provisioner.domain.retention import prune_events
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.errors import is_unavailable
from provisioner.extensions import db
from provisioner.outbox.webhook_delivery import DeliverySettings
from provisioner.outbox.webhook_delivery import deliver_due
from provisioner.outbox.webhooks import SENDER_KEY
from provisioner.power import worker as power_worker
from provisioner.store.process_locks import SchedulerLease
from provisioner.store.transactions import is_storage_full
from provisioner.timeutil import utcnow
from provisioner.web.metrics import SWEEP_DURATION
from provisioner.web.metrics import SWEEP_LAST_SUCCESS

log = logging.getLogger(__name__)

SWEEP_JOB_ID = "sweep_stalled_installs"
PRUNE_JOB_ID = "prune_events"
WEBHOOK_JOB_ID = "deliver_webhooks"
POWER_JOB_ID = "refresh_power_states"
EXTENSION_KEY = "provisioner.scheduler"
LEASE_KEY = "provisioner.scheduler_lease"


def _runs_jobs(app: Flask) -> bool:
    """Whether this process runs the jobs: it holds the lease, or nothing started one (a
    job run by hand or by a test)."""
    lease: SchedulerLease | None = app.extensions.get(LEASE_KEY)
    return lease is None or lease.held()


@contextmanager
def _skipped_while_database_unavailable(job: str) -> Iterator[None]:
    """Log one line instead of a traceback per run while the database is unreachable or
    has no room left."""
    try:
        yield
    except (OperationalError, PoolTimeoutError) as exc:
        if is_storage_full(exc):
            log.error("%s skipped: database storage is full: %s", job, getattr(exc, "orig", exc))
            return
        if isinstance(exc, OperationalError) and not is_unavailable(exc):
            raise
        log.warning("%s skipped: database unavailable: %s", job, getattr(exc, "orig", exc))


def run_sweep(app: Flask) -> None:
    """One sweep, in its own app context."""
    with _skipped_while_database_unavailable("sweep"), app.app_context():
        if not _runs_jobs(app):
            return
        clock = app.config.get("CLOCK", utcnow)
        result = sweep_stalled_installs(db.session, StallRules.from_config(app.config), clock())
        SWEEP_DURATION.observe(result.seconds)
        SWEEP_LAST_SUCCESS.set_to_current_time()
        # After the sweep's transactions committed: queue netboots, BMC calls in the pool.
        power_worker.after_sweep(app, result.retried_ids)


def run_prune(app: Flask) -> None:
    """One pruning pass, in its own app context."""
    with _skipped_while_database_unavailable("prune"), app.app_context():
        if not _runs_jobs(app):
            return
        clock = app.config.get("CLOCK", utcnow)
        prune_events(
            db.session,
            retention_days=app.config["EVENT_RETENTION_DAYS"],
            heartbeat_keep=app.config["HEARTBEAT_KEEP_PER_NODE"],
            now=clock(),
        )


def run_power_refresh(app: Flask) -> None:
    """Refresh the last known power state of BMC-driven nodes (calls run in the pool)."""
    with _skipped_while_database_unavailable("power refresh"):
        if _runs_jobs(app):
            power_worker.run_refresh(app)


def run_webhook_delivery(app: Flask) -> None:
    """One pass over the webhook outbox, in its own app context."""
    with _skipped_while_database_unavailable("webhook delivery"), app.app_context():
        if not _runs_jobs(app):
            return
        deliver_due(
            db.session,
            DeliverySettings.from_config(app.config),
            app.config.get("CLOCK", utcnow),
            app.extensions[SENDER_KEY],
        )


def build_scheduler(app: Flask) -> BackgroundScheduler:
    """A scheduler holding the jobs (webhook delivery only with receivers), not started."""
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    started = datetime.now(UTC)
    scheduler.add_job(
        run_sweep,
        "interval",
        seconds=app.config["SWEEP_INTERVAL_SECONDS"],
        id=SWEEP_JOB_ID,
        args=[app],
    )
    scheduler.add_job(
        run_prune,
        "interval",
        days=1,
        id=PRUNE_JOB_ID,
        args=[app],
        next_run_time=started + timedelta(minutes=5),
    )
    if app.config["POWER_STATUS_INTERVAL_SECONDS"]:
        scheduler.add_job(
            run_power_refresh,
            "interval",
            seconds=app.config["POWER_STATUS_INTERVAL_SECONDS"],
            id=POWER_JOB_ID,
            args=[app],
        )
    if app.config["WEBHOOKS"]:
        scheduler.add_job(
            run_webhook_delivery,
            "interval",
            seconds=app.config["WEBHOOK_INTERVAL_SECONDS"],
            id=WEBHOOK_JOB_ID,
            args=[app],
        )
    return scheduler


def start_scheduler(app: Flask) -> BackgroundScheduler:
    """Start the app's scheduler (``serve`` and ``wsgi.py`` only)."""
    scheduler: BackgroundScheduler = app.extensions[EXTENSION_KEY]
    with app.app_context():
        lease = app.extensions[LEASE_KEY] = SchedulerLease(db.engine)
    with _skipped_while_database_unavailable("scheduler lease"):
        lease.held()  # take it now if free, and say which process runs the jobs
    scheduler.start()
    log.info(
        "scheduler started: sweep every %gs, timeout %g min",
        app.config["SWEEP_INTERVAL_SECONDS"],
        app.config["INSTALL_TIMEOUT_MINUTES"],
    )
    if app.config["WEBHOOKS"]:
        log.info(
            "webhooks: %d receiver(s), outbox sent every %gs",
            len(app.config["WEBHOOKS"]),
            app.config["WEBHOOK_INTERVAL_SECONDS"],
        )
    return scheduler


def stop_scheduler(app: Flask) -> None:
    """Stop the scheduler if it runs, waiting for a job under way to finish."""
    scheduler: BackgroundScheduler = app.extensions[EXTENSION_KEY]
    if scheduler.running:
        scheduler.shutdown(wait=True)
    lease: SchedulerLease | None = app.extensions.pop(LEASE_KEY, None)
    if lease is not None:
        lease.release()

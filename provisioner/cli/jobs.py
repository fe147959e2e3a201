"""``provisioner sweep`` and ``provisioner prune``: the scheduled jobs, run once by hand."""

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.domain.retention import count_prunable
from provisioner.domain.retention import prune_events
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.timeutil import utcnow


@click.command("sweep")
@with_appcontext
def sweep_command() -> None:
    """Time out stalled installs once (what the scheduler does every interval)."""
    result = sweep_stalled_installs(
        db.session, StallRules.from_config(current_app.config), utcnow()
    )
    click.echo(
        f"timed out {result.timed_out} stalled install(s): "
        f"{result.retried} back to pending, {result.failed} install_failed"
    )


@click.command("prune")
@with_appcontext
def prune_command() -> None:
    """Apply the event retention rules once (what the daily job does), with a progress bar."""
    rules = {
        "retention_days": current_app.config["EVENT_RETENTION_DAYS"],
        "heartbeat_keep": current_app.config["HEARTBEAT_KEEP_PER_NODE"],
        "now": utcnow(),
    }
    total = count_prunable(db.session, **rules)
    db.session.rollback()  # end the counting read before the deletes take the write lock
    with click.progressbar(length=total, label="pruning events", show_pos=True) as bar:
        result = prune_events(db.session, progress=bar.update, **rules)
    click.echo(f"deleted {result.expired} expired event(s), {result.heartbeats} heartbeat(s)")

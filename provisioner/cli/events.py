"""``provisioner events`` and ``provisioner stalled``: read the event log and the stalled feed."""

import time

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.cli.nodes import _node_or_fail
from provisioner.domain.stalled_feed import stalled_feed
from provisioner.domain.sweeper import StallRules
from provisioner.extensions import db
from provisioner.models import NodeEvent
from provisioner.store import eventlog
from provisioner.timeutil import duration
from provisioner.timeutil import utcnow

POLL_SECONDS = 1.0


def _event_line(event: NodeEvent) -> str:
    progress = f" {event.progress}%" if event.progress is not None else ""
    message = f" - {event.message}" if event.message else ""
    return (
        f"{event.created_at:%Y-%m-%d %H:%M:%S}  {event.event_type:16} {event.status:11}"
        f"{progress}  [{event.effect or ''}]{message}"
    )


@click.command("events")
@click.argument("ref")
@click.option("--limit", default=20, show_default=True, help="How many past events to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events (Ctrl-C stops).")
@with_appcontext
def events_command(ref: str, limit: int, follow: bool) -> None:
    """Print a node's latest events, oldest first; --follow waits for more."""
    node = _node_or_fail(ref)
    recent, _ = eventlog.node_events(db.session, node.id, event_type=None, limit=limit, offset=0)
    for event in reversed(recent):
        click.echo(_event_line(event))
    cursor = recent[0].id if recent else 0
    db.session.rollback()
    while follow:
        try:
            time.sleep(POLL_SECONDS)
            page, cursor = eventlog.event_stream(
                db.session, since=cursor, event_type=None, node_id=node.id, limit=500
            )
            db.session.rollback()  # end the read so the next poll sees new commits
        except KeyboardInterrupt:
            break
        for event in page:
            click.echo(_event_line(event))


@click.command("stalled")
@with_appcontext
def stalled_command() -> None:
    """Print the stalled-installs feed as a table, oldest stall first."""
    rules = StallRules.from_config(current_app.config)
    now = utcnow()
    items, total = stalled_feed(db.session, rules, now, limit=10_000)
    click.echo(f"{'MAC':17}  {'STATE':14}  {'REASON':15}  {'STALLED FOR':>12}  ATTEMPTS  HOSTNAME")
    for item in items:
        click.echo(
            f"{item.mac_address:17}  {item.state:14}  {item.reason:15}"
            f"  {duration(item.elapsed_seconds):>12}"
            f"  {item.install_attempts}/{item.max_install_attempts:<6}  {item.hostname or '-'}"
        )
    click.echo(f"{total} stalled")

"""``provisioner webhooks test``: send a sample delivery to every configured receiver."""

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.outbox.webhook_delivery import receiver_name
from provisioner.outbox.webhook_delivery import send_sample
from provisioner.outbox.webhooks import SENDER_KEY
from provisioner.outbox.webhooks import DeliveryFailed
from provisioner.timeutil import utcnow


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook receivers ([[WEBHOOKS]] in the config)."""


@webhooks_group.command("test")
@with_appcontext
def test_command() -> None:
    """POST a sample delivery (event "test") to each receiver now and print the outcome."""
    receivers = current_app.config["WEBHOOKS"]
    if not receivers:
        raise click.ClickException("no webhook receivers configured ([[WEBHOOKS]])")
    send = current_app.extensions[SENDER_KEY]
    failures = 0
    for number, receiver in enumerate(receivers, start=1):
        where = f"{number}. {receiver_name(receiver['url'])} ({receiver['format']})"
        try:
            status = send_sample(receiver, utcnow(), send)
        except DeliveryFailed as exc:
            failures += 1
            click.echo(f"{where}: FAILED: {exc}")
        else:
            click.echo(f"{where}: ok, HTTP {status}")
    if failures:
        raise click.ClickException(f"{failures} of {len(receivers)} receivers failed")

"""``provisioner power``: set a node's power control, and power nodes on, off, ..."""

import os
from concurrent.futures import wait

import click
from flask import current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from provisioner.cli.nodes import _node_or_fail
from provisioner.cli.nodes import _one_line
from provisioner.domain import power as rules
from provisioner.extensions import db
from provisioner.power.base import ACTIONS
from provisioner.power.base import DRIVERS
from provisioner.power.worker import service
from provisioner.store import power as store
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow
from provisioner.web.schemas.power import PowerSettingsSchema

#: Where ``set`` reads the BMC password when not asked to prompt (never a command-line
#: argument: ``ps`` would show it to every local user).
PASSWORD_ENV = "PROVISIONER_BMC_PASSWORD"


@click.command("power")
@click.argument("words", nargs=-1, metavar="[NODE] ACTION")
@click.option("--tag", help="Every node with this tag (instead of REF).")
@click.option("--driver", type=click.Choice(DRIVERS), help="set: the driver.")
@click.option("--address", help="set: host[:port], the Redfish system URL, or a broadcast.")
@click.option("--username", help="set: the BMC user.")
@click.option(
    "--password-prompt", is_flag=True, help=f"set: ask for the password (else ${PASSWORD_ENV})."
)
@with_appcontext
def power_command(
    words: tuple[str, ...],
    tag: str | None,
    driver: str | None,
    address: str | None,
    username: str | None,
    password_prompt: bool,
) -> None:
    """Power a node (or every node with --tag) on, off, cycle, status, pxe or netboot;
    ``show`` its settings; ``set`` them (the password is never an argument).

    ACTION is one of on, off, cycle, status, pxe, netboot, show, set.
    """
    if len(words) not in (1, 2) or (len(words) == 1) != bool(tag):
        raise click.UsageError("expected NODE ACTION, or --tag TAG ACTION")
    ref, action = (None, words[0]) if len(words) == 1 else words
    if action not in (*ACTIONS, "show", "set") or (tag and action in ("show", "set")):
        raise click.UsageError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    if action == "set":
        _set(ref, driver, address, username, password_prompt)
    elif action == "show":
        node = _node_or_fail(_required(ref))
        view = rules.describe(store.settings_of(db.session, node.id))
        for key, value in view.items():
            click.echo(f"{key}: {'-' if value is None else value}")
    else:
        _act(ref, tag, action)


def _required(ref: str | None) -> str:
    if not ref:
        raise click.UsageError("name a node (id or MAC address)")
    return ref


def _set(ref, driver, address, username, password_prompt) -> None:
    if not driver:
        raise click.UsageError("set needs --driver")
    spec: dict = {"driver": driver}
    if address:
        spec["address"] = address
    if username:
        spec["username"] = username
    if password_prompt:
        spec["password"] = click.prompt("BMC password", hide_input=True)
    elif os.environ.get(PASSWORD_ENV):
        spec["password"] = os.environ[PASSWORD_ENV]
    try:
        spec = PowerSettingsSchema().load(spec)
    except ValidationError as exc:
        raise click.ClickException(_one_line(exc.messages)) from None
    box = service(current_app).box() if spec.get("password") else None
    with write_transaction(db.session):
        node = _node_or_fail(_required(ref))
        rules.configure(db.session, node, spec, box, utcnow())
    click.echo(f"node {node.id}: power control {driver}")


def _act(ref: str | None, tag: str | None, action: str) -> None:
    queued = []
    with write_transaction(db.session):
        nodes = store.nodes_by_tag(db.session, tag) if tag else [_node_or_fail(_required(ref))]
        for node in nodes:
            try:
                queued.append(rules.request_action(db.session, node, action, "cli", utcnow()))
            except rules.PowerRequestError as exc:
                if not tag:
                    raise click.ClickException(str(exc)) from None
                click.echo(f"node {node.id}: skipped: {exc}", err=True)
    ids = [item.id for item in queued]
    wait(service(current_app).submit(ids))
    failed = 0
    for action_id in ids:
        done = store.get_action(db.session, action_id)
        db.session.refresh(done)
        if done.status == "failed":
            failed += 1
            click.echo(f"node {done.node_id}: power {action} failed: {done.error}", err=True)
        else:
            said = f": machine is {done.result}" if done.result else ""
            click.echo(f"node {done.node_id}: power {action} done{said}")
    if failed:
        raise SystemExit(1)

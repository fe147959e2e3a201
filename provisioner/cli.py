"""The ``provisioner`` command: thin click wrappers over the domain functions."""

import json
import os
import sys
from typing import Any

import click
from flask import Flask
from flask import current_app
from flask.cli import FlaskGroup
from flask.cli import with_appcontext

import provisioner
from provisioner import inventory
from provisioner import workflows
from provisioner.config import ENV_PREFIX
from provisioner.config import ConfigError
from provisioner.database import write_transaction
from provisioner.extensions import db
from provisioner.install_configs import check_configs
from provisioner.inventory import InventoryError
from provisioner.lifecycle import TransitionError
from provisioner.macaddr import InvalidMac
from provisioner.macaddr import normalize_mac
from provisioner.nodes_repo import find_by_ref
from provisioner.retention import prune_events
from provisioner.schemas import NodeSchema
from provisioner.schemas import StateLogSchema
from provisioner.serve import ServeError
from provisioner.serve import serve
from provisioner.sweeper import StallRules
from provisioner.sweeper import sweep_stalled_installs
from provisioner.timeutil import utcnow
from provisioner.tokens import HASH_PREFIX
from provisioner.tokens import new_token
from provisioner.tokens import token_hash


def _use_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ[ENV_PREFIX + "CONFIG"] = value


CONFIG_OPTION = click.Option(
    ["--config"],
    metavar="FILE",
    help="TOML config file (else $PROVISIONER_CONFIG, else instance/config.toml).",
    callback=_use_config_file,
    expose_value=False,
    is_eager=True,
)


def load_app() -> Flask:
    """Build the app, turning a configuration problem into a one-line error."""
    try:
        return provisioner.create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _workflow_store() -> workflows.WorkflowStore:
    return current_app.extensions["provisioner.workflows"]


def _node_or_fail(ref: str):
    node = find_by_ref(db.session, ref)
    if node is None:
        raise click.ClickException(f"node {ref!r} not found")
    return node


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@click.group("nodes")
def nodes_group() -> None:
    """List, add, inspect, move and delete nodes."""


@nodes_group.command("list")
@click.option("--state", help="Only nodes in this state.")
@click.option("--tag", help="Only nodes with this tag.")
@click.option("--limit", default=1000, show_default=True)
@with_appcontext
def nodes_list(state: str | None, tag: str | None, limit: int) -> None:
    """Print a table of nodes."""
    page, total = inventory.list_nodes(db.session, state=state, tag=tag, limit=limit, offset=0)
    click.echo(f"{'ID':36}  {'MAC':17}  {'STATE':14}  {'WORKFLOW':20}  HOSTNAME")
    for node in page:
        click.echo(
            f"{node.id:36}  {node.mac_address:17}  {node.state:14}  "
            f"{node.workflow_id or '-':20}  {node.hostname or '-'}"
        )
    click.echo(f"{len(page)} of {total} node(s)")


@nodes_group.command("add")
@click.argument("mac")
@click.option("--hostname")
@click.option("--workflow", "workflow_id")
@with_appcontext
def nodes_add(mac: str, hostname: str | None, workflow_id: str | None) -> None:
    """Register a node by MAC address."""
    try:
        fields = {"mac_address": normalize_mac(mac), "hostname": hostname}
        if workflow_id:
            fields["workflow_id"] = workflow_id
        with write_transaction(db.session):
            node = inventory.create_node(db.session, fields, _workflow_store(), utcnow())
    except (InvalidMac, InventoryError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created node {node.id} ({node.mac_address}), state {node.state}")


@nodes_group.command("show")
@click.argument("ref")
@with_appcontext
def nodes_show(ref: str) -> None:
    """Print one node and its state history as JSON."""
    node = _node_or_fail(ref)
    data = NodeSchema().dump(node)
    data["history"] = StateLogSchema(many=True).dump(inventory.history(db.session, node))
    _print_json(data)


@nodes_group.command("set-state")
@click.argument("ref")
@click.argument("state")
@click.option("--comment")
@click.option("--force", is_flag=True, help="Allow a move outside the transition table.")
@with_appcontext
def nodes_set_state(ref: str, state: str, comment: str | None, force: bool) -> None:
    """Move a node to another state."""
    try:
        with write_transaction(db.session):
            node = _node_or_fail(ref)
            previous = node.state
            inventory.set_state(db.session, node, state, utcnow(), comment=comment, force=force)
    except (TransitionError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"node {node.id}: {previous} -> {node.state}")


@nodes_group.command("delete")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def nodes_delete(ref: str, yes: bool) -> None:
    """Delete a node and its history."""
    with write_transaction(db.session):
        node = _node_or_fail(ref)
        if not yes:
            click.confirm(f"Delete node {node.id} ({node.mac_address})?", abort=True)
        db.session.delete(node)
    click.echo(f"deleted node {node.id}")


@click.group("workflows")
def workflows_group() -> None:
    """Inspect workflow files."""


@workflows_group.command("list")
@with_appcontext
def workflows_list() -> None:
    """List workflow files and whether each loads."""
    for entry in _workflow_store().entries():
        status = entry.workflow.name if entry.workflow else f"ERROR: {entry.error}"
        click.echo(f"{entry.id:24}  {status}")


@workflows_group.command("check")
@with_appcontext
def workflows_check() -> None:
    """Load and render every workflow; exit 1 if any has a problem."""
    store = _workflow_store()
    entries = store.entries()
    problems = 0
    for entry in entries:
        found = (
            [entry.error]
            if entry.error
            else workflows.check(entry.workflow)
            + check_configs(current_app.extensions["provisioner.jinja"], entry.workflow)
        )
        for problem in found:
            click.echo(f"{entry.file}: {problem}", err=True)
        problems += len(found)
        if not found:
            click.echo(f"{entry.file}: ok")
    if not entries:
        click.echo(f"no workflow files in {store.directory}", err=True)
    if problems:
        sys.exit(1)


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
    """Apply the event retention rules once (what the daily job does)."""
    result = prune_events(
        db.session,
        retention_days=current_app.config["EVENT_RETENTION_DAYS"],
        heartbeat_keep=current_app.config["HEARTBEAT_KEEP_PER_NODE"],
        now=utcnow(),
    )
    click.echo(f"deleted {result.expired} expired event(s), {result.heartbeats} heartbeat(s)")


def register(app: Flask) -> None:
    """Attach the commands that need an app to ``app.cli``."""
    for command in (nodes_group, workflows_group, sweep_command, prune_command):
        app.cli.add_command(command)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--config", metavar="FILE", callback=_use_config_file, expose_value=False, is_eager=True
)
def serve_command(host: str, port: int, threads: int) -> None:
    """Migrate the database, start the scheduler and serve with waitress."""
    try:
        serve(load_app(), host=host, port=port, threads=threads)
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("token")
def token_group() -> None:
    """Operator API tokens."""


@token_group.command("new")
@click.option("--read-only", is_flag=True, help="A token for READ_TOKENS (GET only).")
def token_new(read_only: bool) -> None:
    """Print a fresh random token and the config line that enables it (stored hashed)."""
    token = new_token()
    key = "READ_TOKENS" if read_only else "API_TOKENS"
    click.echo(f"token: {token}")
    click.echo("Keep the token secret; put this line in the config file (it holds only a hash):")
    click.echo(f'{key} = ["{HASH_PREFIX}{token_hash(token)}"]')


main = FlaskGroup(
    name="provisioner",
    help="Bare-metal provisioning server.",
    create_app=load_app,
    add_version_option=False,
    load_dotenv=False,
    params=[CONFIG_OPTION],
)
main.add_command(serve_command)
main.add_command(token_group)

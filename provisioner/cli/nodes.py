"""``provisioner nodes ...``: list, add, inspect, move, delete and import nodes."""

import json
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner import inventory
from provisioner import workflows
from provisioner.database import write_transaction
from provisioner.extensions import db
from provisioner.inventory import InventoryError
from provisioner.lifecycle import TransitionError
from provisioner.macaddr import InvalidMac
from provisioner.macaddr import normalize_mac
from provisioner.nodes_repo import find_by_ref
from provisioner.schemas import NodeSchema
from provisioner.schemas import StateLogSchema
from provisioner.timeutil import utcnow


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

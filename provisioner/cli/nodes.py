"""``provisioner nodes ...``: list, add, inspect, move, delete and import nodes."""

import csv
import json
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from provisioner.domain import inventory
from provisioner.domain import power as power_rules
from provisioner.domain import workflows
from provisioner.domain.inventory import InventoryError
from provisioner.domain.lifecycle import TransitionError
from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import machine_mac
from provisioner.extensions import db
from provisioner.power.worker import service
from provisioner.store.nodes_repo import find_by_ref
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow
from provisioner.web.schemas import Hostname
from provisioner.web.schemas import NodeCreateSchema
from provisioner.web.schemas import NodeSchema
from provisioner.web.schemas import StateLogSchema
from provisioner.web.schemas.power import PowerSettingsSchema


def configure_power(session, node, spec: dict[str, Any]) -> None:
    """Store an imported row's power settings (the password encrypted)."""
    box = service(current_app).box() if spec.get("password") else None
    power_rules.configure(session, node, spec, box, utcnow())


def _workflow_store() -> workflows.WorkflowStore:
    return current_app.extensions["provisioner.domain.workflows"]


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
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
@with_appcontext
def nodes_list(state: str | None, tag: str | None, limit: int, as_json: bool) -> None:
    """Print a table of nodes."""
    page, total = inventory.list_nodes(db.session, state=state, tag=tag, limit=limit, offset=0)
    if as_json:
        _print_json({"data": NodeSchema(many=True).dump(page), "total": total})
        return
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
        fields = {"mac_address": machine_mac(mac), "hostname": _hostname(hostname)}
        if workflow_id:
            fields["workflow_id"] = workflow_id
        with write_transaction(db.session):
            node = inventory.create_node(db.session, fields, _workflow_store(), utcnow())
    except (InvalidMac, InventoryError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created node {node.id} ({node.mac_address}), state {node.state}")


def _hostname(value: str | None) -> str | None:
    """``--hostname`` checked as the API checks it: it is rendered into install configs."""
    if value is None:
        return None
    try:
        return Hostname().deserialize(value)
    except ValidationError as exc:
        raise click.ClickException(f"hostname: {_one_line(exc.messages)}") from None


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


IMPORT_COLUMNS = (
    "mac_address",
    "hostname",
    "workflow_id",
    "tags",
    "vendor",
    "model",
    "serial_number",
    "ip_address",
    # Power control (docs/power.md); power_password is encrypted as it is stored.
    "power_driver",
    "power_address",
    "power_username",
    "power_password",
)


def _import_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as node fields, checked like an API request (tags split on ``;``)."""
    raw: dict[str, Any] = {key: value.strip() for key, value in row.items() if key and value}
    unknown = sorted(set(raw) - set(IMPORT_COLUMNS))
    if unknown:
        raise ValidationError({unknown[0]: ["Unknown column."]})
    if "tags" in raw:
        raw["tags"] = [tag.strip() for tag in raw["tags"].split(";") if tag.strip()]
    power = {key[6:]: raw.pop(key) for key in list(raw) if key.startswith("power_")}
    fields = NodeCreateSchema().load(raw)
    if power:
        try:
            fields["power"] = PowerSettingsSchema().load(power)
        except ValidationError as exc:
            raise ValidationError({"power": exc.messages}) from None
    return fields


@nodes_group.command("import")
@click.argument("csv_file", type=click.File("r", encoding="utf-8"))
@with_appcontext
def nodes_import(csv_file) -> None:
    """Register nodes from a CSV file with a header row.

    Columns: mac_address (required), hostname, workflow_id, tags (separated by ``;``),
    vendor, model, serial_number, ip_address, and power_driver, power_address,
    power_username, power_password (docs/power.md; delete the file once imported). Rows
    that fail are reported and skipped; the exit status is 1 if any did.
    """
    rows = list(csv.DictReader(csv_file))
    problems: list[str] = []
    created = 0
    with click.progressbar(rows, label="importing nodes", show_pos=True) as bar:
        for line, row in enumerate(bar, start=2):
            try:
                fields = _import_row(row)
                power = fields.pop("power", None)
                with write_transaction(db.session):
                    node = inventory.create_node(db.session, fields, _workflow_store(), utcnow())
                    if power is not None:
                        configure_power(db.session, node, power)
                created += 1
            except ValidationError as exc:
                problems.append(f"line {line}: {_one_line(exc.messages)}")
            except InventoryError as exc:
                problems.append(f"line {line}: {exc}")
    for problem in problems:
        click.echo(problem, err=True)
    click.echo(f"created {created} node(s), skipped {len(problems)}")
    if problems:
        raise SystemExit(1)


def _one_line(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{key}: {_one_line(value)}" for key, value in messages.items())
    if isinstance(messages, list):
        return " ".join(_one_line(item) for item in messages)
    return str(messages)

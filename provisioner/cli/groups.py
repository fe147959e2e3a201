"""``provisioner groups ...``: list, show, set, delete machine groups, and the dry run."""

import json
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext
from marshmallow import ValidationError

from provisioner.domain.groups import Facts
from provisioner.domain.groups import dry_run
from provisioner.domain.groups import facts_with
from provisioner.domain.groups import rule_of
from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import machine_mac
from provisioner.extensions import db
from provisioner.store import groups as store
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow
from provisioner.web.schemas.groups import GroupCreateSchema
from provisioner.web.schemas.groups import GroupFieldsSchema
from provisioner.web.schemas.groups import GroupSchema


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _problems(messages: Any) -> str:
    return "; ".join(f"{key}: {value}" for key, value in messages.items())


@click.group("groups")
def groups_group() -> None:
    """Machine groups: rules that give machines a workflow and variables."""


@groups_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
@with_appcontext
def groups_list(as_json: bool) -> None:
    """Print the groups."""
    groups = store.all_groups(db.session)
    if as_json:
        _print_json({"data": GroupSchema(many=True).dump(groups), "total": len(groups)})
        return
    click.echo(f"{'NAME':24}  {'PRIO':>5}  {'WORKFLOW':20}  AUTO  SELECTORS")
    for group in groups:
        selectors = ", ".join(
            f"{key}={getattr(group, key)}"
            for key in (
                "mac_prefix",
                "tags",
                "architecture",
                "platform",
                "manufacturer",
                "product",
                "serial",
                "uuid",
            )
            if getattr(group, key)
        )
        click.echo(
            f"{group.name:24}  {group.priority:>5}  {group.workflow_id or '-':20}  "
            f"{'yes ' if group.auto_install else 'no  '}  {selectors or '(every machine)'}"
        )
    click.echo(f"{len(groups)} group(s)")


@groups_group.command("show")
@click.argument("name")
@with_appcontext
def groups_show(name: str) -> None:
    """Print one group as JSON."""
    group = store.find_group(db.session, name)
    if group is None:
        raise click.ClickException(f"group {name!r} not found")
    _print_json(GroupSchema().dump(group))


@groups_group.command("set")
@click.argument("name")
@click.option("--priority", type=int)
@click.option("--mac-prefix")
@click.option("--tag", "tags", multiple=True, help="Repeat for several (all must match).")
@click.option("--architecture")
@click.option("--platform", type=click.Choice(["pcbios", "efi"]))
@click.option("--manufacturer", help="Glob, e.g. 'Dell*'.")
@click.option("--product")
@click.option("--serial")
@click.option("--uuid")
@click.option("--workflow", "workflow_id")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE")
@click.option("--auto-install/--no-auto-install", default=None)
@click.option("--description")
@with_appcontext
def groups_set(name: str, **options: Any) -> None:
    """Create a group, or change the options given of an existing one."""
    raw = {key: value for key, value in options.items() if value not in (None, ())}
    if "tags" in raw:
        raw["tags"] = list(raw["tags"])
    if "variables" in raw:
        pairs = [item.partition("=") for item in raw["variables"]]
        if any(not sep for _, sep, _ in pairs):
            raise click.ClickException("--var takes NAME=VALUE")
        raw["variables"] = {key: value for key, _, value in pairs}
    now = utcnow()
    with write_transaction(db.session):
        group = store.find_group(db.session, name, for_update=True)
        try:
            if group is None:
                fields = GroupCreateSchema().load(raw | {"name": name})
                fields.pop("name")
            else:
                fields = GroupFieldsSchema().load(raw)
        except ValidationError as exc:
            raise click.ClickException(_problems(exc.messages)) from None
        workflow_id = fields.get("workflow_id", group.workflow_id if group else None)
        store_ = current_app.extensions["provisioner.domain.workflows"]
        if fields.get("workflow_id") and not store_.exists(fields["workflow_id"]):
            raise click.ClickException(f"workflow_id: unknown workflow {workflow_id!r}")
        if fields.get("auto_install", group.auto_install if group else False) and not workflow_id:
            raise click.ClickException("auto_install needs a workflow (--workflow)")
        if group is None:
            group = store.add_group(db.session, name, fields, now)
            verb = "created"
        else:
            store.change_group(db.session, group, fields, now)
            verb = "updated"
    click.echo(f"{verb} group {name}")


@groups_group.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask.")
@with_appcontext
def groups_delete(name: str, yes: bool) -> None:
    """Delete a group."""
    if not yes:
        click.confirm(f"Delete group {name}?", abort=True)
    with write_transaction(db.session):
        group = store.find_group(db.session, name, for_update=True)
        if group is None:
            raise click.ClickException(f"group {name!r} not found")
        store.delete_group(db.session, group)
    click.echo(f"deleted group {name}")


@groups_group.command("match")
@click.argument("mac")
@click.option("--tag", "tags", multiple=True)
@click.option("--arch")
@click.option("--platform", type=click.Choice(["pcbios", "efi"]))
@click.option("--manufacturer")
@click.option("--product")
@click.option("--serial")
@click.option("--uuid")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead.")
@with_appcontext
def groups_match(mac: str, tags: tuple[str, ...], as_json: bool, **given: Any) -> None:
    """Dry run: which group MAC (with these facts) gets, and why. Changes nothing."""
    try:
        mac = machine_mac(mac)
    except InvalidMac as exc:
        raise click.ClickException(str(exc)) from None
    node = find_node(db.session, mac)
    base = Facts.of_node(node, node.tags) if node is not None else Facts(mac=mac)
    facts = facts_with(base, tags=list(tags) if tags else None, **given)
    result = dry_run(
        [rule_of(group) for group in store.all_groups(db.session)],
        facts,
        node_id=node.id if node else None,
        node_workflow_id=node.workflow_id if node else None,
    )
    if as_json:
        _print_json(result)
        return
    click.echo(f"{mac}: {result['why']}")
    source = result["workflow_source"]
    click.echo(
        f"workflow: {result['workflow_id'] or '(none)'}"
        + (f" (from the {source})" if source else "")
    )
    if result["auto_install"]:
        click.echo("a first boot would go straight to pending (auto_install)")
    for candidate in result["candidates"]:
        mark = (
            "*" if candidate["name"] == result["group"] else ("+" if candidate["matches"] else "-")
        )
        click.echo(
            f"  {mark} {candidate['name']} (priority {candidate['priority']}, "
            f"specificity {candidate['specificity']}): {candidate['why']}"
        )

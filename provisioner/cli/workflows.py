"""``provisioner workflows ...``: list and check workflow files."""

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner import workflows
from provisioner.cli.nodes import _workflow_store
from provisioner.install_configs import check_configs


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

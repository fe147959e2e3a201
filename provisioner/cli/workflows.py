"""``provisioner workflows ...``: list and check workflow files."""

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.assets.fetch import verify
from provisioner.cli.nodes import _workflow_store
from provisioner.domain import workflows
from provisioner.domain.assets import asset_path
from provisioner.domain.install_configs import check_configs


def asset_problems(workflow: workflows.Workflow, offline: bool) -> list[str]:
    """Files of the workflow's ``assets:`` list that are missing or do not match their
    checksum (a missing kernel or initrd file is ``check_sources``'s to report)."""
    root = Path(current_app.config["ASSETS_DIR"])
    served = {asset_path(workflow.kernel_path), asset_path(workflow.initrd_path)}
    problems = []
    for spec in workflow.assets:
        result = verify(spec, root, offline=offline)
        if result.problem and not (spec.path in served and not result.path.is_file()):
            problems.append(f"assets: {result.problem}")
    return problems


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
@click.option("--offline", is_flag=True, help="Do not send HEAD to kernel and initrd URLs.")
@with_appcontext
def workflows_check(offline: bool) -> None:
    """Load and render every workflow and check its kernel and initrd can be had; exit 1 if
    any has a problem."""
    store = _workflow_store()
    entries = store.entries()
    problems = 0
    for entry in entries:
        found = [entry.error] if entry.error else []
        if entry.workflow is not None:
            found += workflows.check(entry.workflow)
            found += check_configs(current_app.extensions["provisioner.jinja"], entry.workflow)
            sources = workflows.check_sources(
                entry.workflow,
                directory=Path(current_app.config["ASSETS_DIR"]),
                server_url=current_app.config["SERVER_URL"],
                offline=offline,
            )
            found += sources.problems
            found += asset_problems(entry.workflow, offline)
            found += asset_problems(entry.workflow, offline)
            for warning in sources.warnings:
                click.echo(f"{entry.file}: warning: {warning}", err=True)
            for note in sources.notes:
                click.echo(f"{entry.file}: {note}")
        for problem in found:
            click.echo(f"{entry.file}: {problem}", err=True)
        problems += len(found)
        if not found:
            click.echo(f"{entry.file}: ok")
    if not entries:
        click.echo(f"no workflow files in {store.directory}", err=True)
    if problems:
        sys.exit(1)

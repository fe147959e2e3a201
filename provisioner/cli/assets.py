"""``provisioner assets ...``: download, list and check the files of ``ASSETS_DIR``."""

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.assets import fetch as fetching
from provisioner.cli.nodes import _workflow_store
from provisioner.domain.assets import workflow_assets
from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowError


@click.group("assets")
def assets_group() -> None:
    """Installer files served at /assets/ (ASSETS_DIR)."""


def _assets_dir() -> Path:
    return Path(current_app.config["ASSETS_DIR"])


def _workflows(workflow_id: str | None) -> list[Workflow]:
    store = _workflow_store()
    if workflow_id is not None:
        try:
            return [store.load(workflow_id)]
        except WorkflowError as exc:
            raise click.ClickException(str(exc)) from None
    return [entry.workflow for entry in store.entries() if entry.workflow is not None]


@assets_group.command("fetch")
@click.argument("workflow_id")
@with_appcontext
def assets_fetch(workflow_id: str) -> None:
    """Download the workflow's assets (its assets: list) into ASSETS_DIR, checking each
    checksum; an interrupted download resumes. Exit 1 if any fails."""
    root = _assets_dir()
    failed = 0
    specs = [spec for spec in workflow_assets(_workflows(workflow_id)[0]) if spec.url]
    if not specs:
        raise click.ClickException(f"workflow {workflow_id} lists no assets with a url")
    for spec in specs:
        try:
            fetched = _fetch_one(spec, root)
        except fetching.AssetError as exc:
            click.echo(f"{spec.path}: FAILED: {exc}", err=True)
            failed += 1
            continue
        click.echo(
            f"{spec.path}: {fetched.outcome}, {fetched.size} bytes, sha256:{fetched.digest}"
        )
    if failed:
        sys.exit(1)


def _fetch_one(spec, root: Path) -> fetching.Fetched:  # noqa: ANN001
    bar = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total or 0, label=spec.path, file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        return fetching.fetch(spec, root, progress)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@assets_group.command("list")
@click.argument("workflow_id", required=False)
@with_appcontext
def assets_list(workflow_id: str | None) -> None:
    """List each workflow's assets and whether each is in ASSETS_DIR (no checksums read)."""
    root = _assets_dir()
    for workflow in _workflows(workflow_id):
        for spec in workflow_assets(workflow):
            try:
                path = fetching.target(root, spec)
            except fetching.AssetError as exc:
                state = f"invalid: {exc}"
            else:
                if path.is_file():
                    state = f"present, {path.stat().st_size} bytes"
                elif fetching.part_of(path).is_file():
                    state = f"partial, {fetching.part_of(path).stat().st_size} bytes so far"
                else:
                    state = "missing"
            click.echo(f"{workflow.id:20}  {spec.path:40}  {state}")


@assets_group.command("verify")
@click.argument("workflow_id", required=False)
@click.option("--offline", is_flag=True, help="Do not download SHA256SUMS files.")
@with_appcontext
def assets_verify(workflow_id: str | None, offline: bool) -> None:
    """Check that every asset is present and matches its checksum; exit 1 if any does not."""
    problems = 0
    for workflow in _workflows(workflow_id):
        for spec in workflow_assets(workflow):
            result = fetching.verify(spec, _assets_dir(), offline=offline)
            if result.problem:
                problems += 1
                click.echo(f"{workflow.id}: {result.problem}", err=True)
            else:
                click.echo(f"{workflow.id}: {result.note or spec.path + ': ok'}")
    if problems:
        sys.exit(1)

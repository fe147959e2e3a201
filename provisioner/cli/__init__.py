"""The ``provisioner`` command: thin click wrappers over the domain functions.

One module per command group; this one builds the ``provisioner`` group itself and holds
the commands that need no app (``serve`` builds its own, ``token`` needs none).
"""

import os

import click
from flask import Flask
from flask.cli import FlaskGroup

import provisioner
from provisioner.cli.events import events_command
from provisioner.cli.events import stalled_command
from provisioner.cli.jobs import prune_command
from provisioner.cli.jobs import sweep_command
from provisioner.cli.nodes import nodes_group
from provisioner.cli.webhooks import webhooks_group
from provisioner.cli.workflows import workflows_group
from provisioner.config import ENV_PREFIX
from provisioner.config import ConfigError
from provisioner.serve import CHANNEL_TIMEOUT_SECONDS
from provisioner.serve import CONNECTION_LIMIT
from provisioner.serve import ServeError
from provisioner.serve import serve
from provisioner.serve import serve_workers
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


def register(app: Flask) -> None:
    """Attach the commands that need an app to ``app.cli``."""
    for command in (
        nodes_group,
        workflows_group,
        sweep_command,
        prune_command,
        events_command,
        stalled_command,
        webhooks_group,
    ):
        app.cli.add_command(command)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (SO_REUSEPORT); about one per core.",
)
@click.option(
    "--connection-limit",
    default=CONNECTION_LIMIT,
    show_default=True,
    type=click.IntRange(1),
    help="Connections held open at once per process; more wait in the kernel's backlog.",
)
@click.option(
    "--channel-timeout",
    default=CHANNEL_TIMEOUT_SECONDS,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds a connection may send nothing before it is closed.",
)
@click.option("--reuse-port", is_flag=True, help="Bind with SO_REUSEPORT (for a supervisor).")
@click.option(
    "--pin-cpu/--no-pin-cpu",
    default=True,
    show_default=True,
    help="Keep each server process on one CPU (workers on different ones): its threads "
    "then hand the GIL over without waking another core.",
)
@click.option("--cpu-index", default=None, type=click.IntRange(0), hidden=True)
@click.option("--no-migrate", is_flag=True, hidden=True)
@click.option(
    "--config", metavar="FILE", callback=_use_config_file, expose_value=False, is_eager=True
)
def serve_command(
    host: str,
    port: int,
    threads: int,
    workers: int,
    connection_limit: int,
    channel_timeout: int,
    reuse_port: bool,
    pin_cpu: bool,
    cpu_index: int | None,
    no_migrate: bool,
) -> None:
    """Migrate the database, start the scheduler and serve with waitress."""
    try:
        if workers > 1:
            code = serve_workers(
                load_app(),
                host=host,
                port=port,
                threads=threads,
                workers=workers,
                connection_limit=connection_limit,
                channel_timeout=channel_timeout,
                pin_cpu=pin_cpu,
            )
            raise SystemExit(code)
        serve(
            load_app(),
            host=host,
            port=port,
            threads=threads,
            connection_limit=connection_limit,
            channel_timeout=channel_timeout,
            reuse_port=reuse_port,
            migrate=not no_migrate,
            pin_cpu=pin_cpu,
            cpu_index=cpu_index,
        )
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

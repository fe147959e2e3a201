"""The ``provisioner`` command: thin click wrappers over the domain functions.

One module per command group; this one builds the ``provisioner`` group itself and holds
the commands that need no app (``serve`` builds its own, ``token`` needs none) and ``db``.
The group is the product's own (not Flask's ``flask`` command): only these commands, and
operational errors as one line (``--debug`` for the traceback). Developers make migrations
with Flask-Migrate's full command set: ``flask --app provisioner db migrate -m "..."``.
"""

import os
from typing import Any

import click
from flask import Flask
from flask.cli import ScriptInfo

import provisioner
from provisioner import operational
from provisioner.cli.assets import assets_group
from provisioner.cli.db import db_group
from provisioner.cli.events import events_command
from provisioner.cli.events import stalled_command
from provisioner.cli.groups import groups_group
from provisioner.cli.jobs import prune_command
from provisioner.cli.jobs import sweep_command
from provisioner.cli.nodes import nodes_group
from provisioner.cli.power import power_command
from provisioner.cli.pxe import pxe_group
from provisioner.cli.webhooks import webhooks_group
from provisioner.cli.workflows import workflows_group
from provisioner.config import ENV_PREFIX
from provisioner.config import ConfigError
from provisioner.domain.tokens import HASH_PREFIX
from provisioner.domain.tokens import new_token
from provisioner.domain.tokens import token_hash
from provisioner.serve import CHANNEL_TIMEOUT_SECONDS
from provisioner.serve import CONNECTION_LIMIT
from provisioner.serve import ServeError
from provisioner.serve import serve
from provisioner.serve import serve_workers
from provisioner.version import VERSION


def _use_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ[ENV_PREFIX + "CONFIG"] = value


def load_app() -> Flask:
    """Build the app, turning a configuration problem into a one-line error."""
    try:
        return provisioner.create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


#: The commands that need an app: on ``provisioner`` and on ``app.cli`` (``flask --app``).
APP_COMMANDS = (
    nodes_group,
    workflows_group,
    sweep_command,
    prune_command,
    events_command,
    stalled_command,
    webhooks_group,
    power_command,
    pxe_group,
    assets_group,
    groups_group,
)


def register(app: Flask) -> None:
    """Attach the commands that need an app to ``app.cli``."""
    for command in APP_COMMANDS:
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
@click.option("--no-pxe", is_flag=True, hidden=True)
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
    no_pxe: bool,
) -> None:
    """Migrate the database, start the scheduler and serve with waitress.

    \b
    Examples:
      provisioner serve --host 0.0.0.0 --port 8080
      provisioner --config /etc/provisioner/config.toml serve --workers 2
    """
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
            pxe=not no_pxe,
        )
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("token")
def token_group() -> None:
    """Operator API tokens."""


@token_group.command("new")
@click.option("--read-only", is_flag=True, help="A token for READ_TOKENS (GET only).")
def token_new(read_only: bool) -> None:
    """Print a fresh random token and the config line that enables it (stored hashed).

    \b
    Examples:
      provisioner token new
      provisioner token new --read-only
    """
    token = new_token()
    key = "READ_TOKENS" if read_only else "API_TOKENS"
    click.echo(f"token: {token}")
    click.echo("Keep the token secret; put this line in the config file (it holds only a hash):")
    click.echo(f'{key} = ["{HASH_PREFIX}{token_hash(token)}"]')


DEBUG_KEY = "provisioner.debug"


class ProvisionerGroup(click.Group):
    """The top-level group: operational errors become one line unless ``--debug``."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command, turning an operational error into a ``ClickException``."""
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            message = operational.describe(exc, os.environ.get(ENV_PREFIX + "DATABASE_URL"))
            if message is None or ctx.meta.get(DEBUG_KEY):
                raise
            raise click.ClickException(message) from None


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctx.meta[DEBUG_KEY] = value


@click.group(
    "provisioner",
    cls=ProvisionerGroup,
    epilog="Run 'provisioner COMMAND --help' for a command's options and examples.",
)
@click.version_option(
    VERSION, "--version", "-V", prog_name="provisioner", message="%(prog)s %(version)s"
)
@click.option(
    "--config",
    metavar="FILE",
    help="TOML config file (else $PROVISIONER_CONFIG, else DATA_DIR/config.toml).",
    callback=_use_config_file,
    expose_value=False,
    is_eager=True,
)
@click.option(
    "--debug",
    is_flag=True,
    help="Show the full traceback of an error.",
    callback=_set_debug,
    expose_value=False,
    is_eager=True,
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Bare-metal provisioning server: iPXE boot scripts and the install lifecycle.

    \b
    Examples:
      provisioner db upgrade && provisioner serve --host 0.0.0.0
      provisioner nodes list --state installing
      provisioner token new
    """
    # with_appcontext builds the app through this on first use (never for --help).
    ctx.obj = ScriptInfo(create_app=load_app, set_debug_flag=False)


#: Examples under the help of the commands defined in the other modules of this package.
EXAMPLES = {
    "nodes list": ["provisioner nodes list --state installing", "provisioner nodes list --json"],
    "nodes add": ["provisioner nodes add 52:54:00:12:34:56 --hostname web1 --workflow debian-12"],
    "nodes show": ["provisioner nodes show web1"],
    "nodes set-state": [
        "provisioner nodes set-state web1 pending",
        "provisioner nodes set-state web1 discovered --force --comment 'disk swapped'",
    ],
    "nodes delete": ["provisioner nodes delete web1 --yes"],
    "nodes import": ["provisioner nodes import rack42.csv"],
    "workflows list": ["provisioner workflows list"],
    "workflows check": ["provisioner workflows check"],
    "sweep": ["provisioner sweep"],
    "prune": ["provisioner prune"],
    "events": ["provisioner events web1 --limit 50", "provisioner events web1 --follow"],
    "stalled": ["provisioner stalled"],
    "webhooks test": ["provisioner webhooks test"],
    "power": [
        "provisioner power web1 status",
        "provisioner power web1 netboot",
        "provisioner power --tag rack42 off",
        "PROVISIONER_BMC_PASSWORD=... provisioner power web1 set --driver ipmi "
        "--address 10.0.0.5 --username admin",
    ],
    "pxe config": [
        "provisioner pxe config > /etc/provisioner/pxe-dnsmasq.conf",
        "provisioner pxe config --interface eth1 --port 8080",
    ],
    "assets fetch": ["provisioner assets fetch debian-12"],
    "assets list": ["provisioner assets list", "provisioner assets list debian-12"],
    "assets verify": ["provisioner assets verify", "provisioner assets verify --offline"],
    "groups list": ["provisioner groups list", "provisioner groups list --json"],
    "groups show": ["provisioner groups show rack42"],
    "groups set": [
        "provisioner groups set rack42 --tag rack42 --workflow debian-12 --var ntp=10.0.0.1",
        "provisioner groups set r650 --manufacturer 'Dell*' --product 'PowerEdge R650' "
        "--platform efi --workflow rocky-9 --auto-install --priority 10",
    ],
    "groups delete": ["provisioner groups delete rack42 --yes"],
    "groups match": [
        "provisioner groups match 52:54:00:12:34:56",
        "provisioner groups match 52:54:00:12:34:56 --manufacturer 'Dell Inc.' --platform efi",
    ],
}


def _add_examples(command: click.Command, path: str) -> None:
    """Put the ``EXAMPLES`` of ``command`` and of its subcommands under their help."""
    if path in EXAMPLES and not command.epilog:
        lines = "\n".join(f"  {example}" for example in EXAMPLES[path])
        command.epilog = f"\b\nExamples:\n{lines}"
    for name, sub in getattr(command, "commands", {}).items():
        _add_examples(sub, f"{path} {name}")


main.add_command(serve_command)
main.add_command(token_group)
main.add_command(db_group)
for _command in APP_COMMANDS:
    _add_examples(_command, _command.name or "")
    main.add_command(_command)

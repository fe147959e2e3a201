"""The ``provisioner`` command's definition: its own commands only (no Flask internals), and
help with an example for every command. Read from the click objects, no app is built. Run as
a process: tests/api/test_cli_main.py."""

import click
import pytest
from click.testing import CliRunner

from provisioner.cli import main

PRODUCT_COMMANDS = {
    "assets",
    "db",
    "events",
    "groups",
    "nodes",
    "power",
    "prune",
    "pxe",
    "serve",
    "stalled",
    "sweep",
    "token",
    "webhooks",
    "workflows",
}


def leaf_commands(group: click.Group, path: str = "") -> dict[str, click.Command]:
    """Every runnable command under ``group``, by its full name."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= leaf_commands(command, f"{path}{name} ")
        elif not command.hidden:
            found[f"{path}{name}"] = command
    return found


def test_help_lists_only_the_products_commands():
    """No Flask internals (run, shell, routes, -A/--app, -e/--env-file) in the top help."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:")[1].split("\n\n")[0]
    names = {line.split()[0] for line in listed.splitlines() if line.startswith("  ")}
    assert names == PRODUCT_COMMANDS
    for internal in ("--app", "--env-file", "-A,", "-e,"):
        assert internal not in result.output


def test_db_offers_upgrade_current_and_check_only():
    """Making or undoing migrations is the developers' ``flask --app provisioner db``."""
    db_group = main.commands["db"]
    assert isinstance(db_group, click.Group)
    assert set(db_group.commands) == {"upgrade", "current", "check"}


@pytest.mark.parametrize("name", sorted(leaf_commands(main)))
def test_every_command_has_help_and_an_example(name):
    """``provisioner ... --help`` of every command explains it and shows an example."""
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, result.output
    assert "provisioner " + name in result.output.split("Example")[1]

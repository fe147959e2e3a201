"""``provisioner pxe config``: the dnsmasq configuration, for a dnsmasq of your own."""

import click
from flask import current_app
from flask.cli import with_appcontext

from provisioner.pxe.dnsmasq_conf import PxeError
from provisioner.pxe.dnsmasq_conf import plan_from_config
from provisioner.pxe.dnsmasq_conf import render


@click.group("pxe")
def pxe_group() -> None:
    """PXE from bare metal: proxy DHCP and TFTP (PXE, PXE_INTERFACE in the config)."""


@pxe_group.command("config")
@click.option("--interface", help="The interface on the machines' LAN [default: PXE_INTERFACE].")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="The port serve listens on: the chain URL's when SERVER_URL is not set.",
)
@with_appcontext
def config_command(interface: str | None, port: int) -> None:
    """Print the dnsmasq configuration serve runs with PXE = true.

    For a dnsmasq you run yourself (with PXE = false): it answers PXE clients on the
    interface's LAN beside the LAN's own DHCP server, serves iPXE over TFTP and chains
    iPXE to this server. This host's interface gives the subnet and, without SERVER_URL,
    the address in the chain URL.
    """
    settings = dict(current_app.config)
    if interface:
        settings["PXE_INTERFACE"] = interface
    try:
        click.echo(render(plan_from_config(settings, port)), nl=False)
    except PxeError as exc:
        raise click.ClickException(str(exc)) from None

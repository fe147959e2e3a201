"""What a boot is decided with, built per request: settings, groups and the menu builder.

Shared by ``/api/v1/boot`` and the boot menu's choice, so both decide alike.
"""

from collections.abc import Callable
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Flask
from flask import Response
from flask import current_app

from provisioner.domain.boot_menu import MenuSettings
from provisioner.domain.boot_menu import choice_url
from provisioner.domain.boot_menu import expiry
from provisioner.domain.boot_menu import fitting_workflows
from provisioner.domain.boot_menu import menu_script
from provisioner.domain.boot_menu import offers_menu
from provisioner.domain.boot_menu import sign
from provisioner.domain.booting import BootSettings
from provisioner.domain.sweeper import StallRules
from provisioner.web.context import now
from provisioner.web.context import peer_ip
from provisioner.web.context import server_url
from provisioner.web.context import workflow_store
from provisioner.web.groups import group_cache

SCRIPT_RESPONSE = {
    "description": "An iPXE script (first line `#!ipxe`)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def script_response(script: str, status: int = 200) -> Response:
    """Send an iPXE script as ``text/plain``."""
    return Response(script, status=status, mimetype="text/plain")


def boot_settings() -> BootSettings:
    """The settings of this request's boot decision."""
    # Found once: each look through the ``current_app`` proxy costs about 1 µs.
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    menu = menu_settings(app)
    server = server_url(app)
    return BootSettings(
        server_url=server,
        auto_register=app.config["AUTO_REGISTER"],
        workflows=workflow_store(app),
        rules=StallRules.from_config(app.config),
        groups=group_cache(app).rules,
        menu=menu,
        menu_for=menu_builder(menu, server, peer_ip(), now()) if menu.enabled else None,
    )


def menu_settings(app: Flask | None = None) -> MenuSettings:
    """The menu settings of ``app``, by default the current one (built once: the key
    derivation is not free)."""
    app = app or current_app
    settings = app.extensions.get("provisioner.boot_menu")
    if settings is None:
        settings = app.extensions["provisioner.boot_menu"] = MenuSettings.from_config(app.config)
    return settings


def menu_builder(
    settings: MenuSettings, server: str, ip: str | None, moment: datetime
) -> Callable[[Any, Sequence[str]], str | None]:
    """``BootSettings.menu_for`` for one request: the menu script for a node, or None."""

    def build(node: Any, tags: Sequence[str]) -> str | None:
        if not offers_menu(settings, node.state, node.boot_menu, tags):
            return None
        workflows = fitting_workflows(workflow_store().entries(), node.arch, node.boot_mode)
        if not workflows:
            return None
        expires = expiry(moment, settings.timeout_seconds)
        signature = sign(
            settings.key, node.id, node.mac_address, node.state_changed_at, expires, ip
        )
        urls = {
            workflow.id: choice_url(server, node.mac_address, workflow.id, expires, signature)
            for workflow in workflows
        }
        return menu_script(
            node_id=node.id,
            mac=node.mac_address,
            workflows=workflows,
            urls=urls,
            timeout_seconds=settings.timeout_seconds,
        )

    return build

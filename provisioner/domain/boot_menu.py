"""The console boot menu: who gets it, what it lists, its script and its signed choice URLs.

A machine waiting for an operator (``discovered``, ``reprovision`` or ``install_failed``:
the states the lifecycle lets an operator move to ``pending``) can be offered an iPXE menu
of the workflows that fit it; the menu times out into the local disk. Choosing an entry
makes iPXE fetch ``/api/v1/boot/menu?...&sig=``: the signature (HMAC-SHA256 under
``SECRET_KEY``) binds the choice to the node, its MAC, the moment it entered its current
state, the address that was served the menu and an expiry, so a choice URL cannot be made
up, replayed from another address, or replayed once the node has moved. No Flask, no SQL.
"""

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from provisioner.domain import ipxe
from provisioner.domain.hardware import architecture_fits
from provisioner.domain.lifecycle import State
from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowEntry

#: States in which a node waits for an operator and may be sent to ``pending``.
MENU_STATES = frozenset({State.DISCOVERED, State.REPROVISION, State.INSTALL_FAILED})
#: A choice URL stays valid this long after the menu's timeout (someone reading slowly).
GRACE_SECONDS = 300
MENU_PATH = "/api/v1/boot/menu"
#: Entries chosen with a digit key (1-9).
MAX_KEYED = 9


@dataclass(frozen=True)
class MenuSettings:
    """``BOOT_MENU``, ``BOOT_MENU_TAGS``, ``BOOT_MENU_TIMEOUT_SECONDS`` and the HMAC key."""

    enabled: bool
    tags: frozenset[str]
    timeout_seconds: int
    key: bytes

    @classmethod
    def from_config(cls, config: dict) -> "MenuSettings":
        secret = str(config["SECRET_KEY"]).encode()
        return cls(
            enabled=config["BOOT_MENU"],
            tags=frozenset(config["BOOT_MENU_TAGS"]),
            timeout_seconds=config["BOOT_MENU_TIMEOUT_SECONDS"],
            # A key of its own, derived: a menu signature can never pass for a cookie's.
            key=hmac.new(secret, b"provisioner boot menu", hashlib.sha256).digest(),
        )

    @property
    def needs_tags(self) -> bool:
        """Whether deciding needs the node's tags (only when the menu is limited to some)."""
        return self.enabled and bool(self.tags)


def offers_menu(
    settings: MenuSettings, state: str, node_setting: bool | None, tags: Iterable[str] = ()
) -> bool:
    """Whether a node in ``state`` gets the menu: ``BOOT_MENU`` on, a waiting state, and the
    node's own ``boot_menu`` (True/False), else one of ``BOOT_MENU_TAGS`` (or no limit)."""
    if not settings.enabled or state not in MENU_STATES or node_setting is False:
        return False
    if node_setting is True or not settings.tags:
        return True
    return not settings.tags.isdisjoint(tags)


def fitting_workflows(
    entries: Iterable[WorkflowEntry], arch: str | None, boot_mode: str | None
) -> list[Workflow]:
    """The workflows that load and fit the machine's architecture and firmware."""
    found = []
    for entry in entries:
        workflow = entry.workflow
        if workflow is None or not architecture_fits(workflow.architecture, arch):
            continue
        if workflow.boot_mode in ("any", boot_mode) or boot_mode is None:
            found.append(workflow)
    return found


def _message(node_id: str, mac: str, state_changed_at: datetime, expires: int, ip: str) -> bytes:
    stamp = state_changed_at.isoformat()
    return "\x00".join(("menu", node_id, mac, stamp, str(expires), ip)).encode()


def sign(
    key: bytes, node_id: str, mac: str, state_changed_at: datetime, expires: int, ip: str | None
) -> str:
    """The choice URLs' signature."""
    message = _message(node_id, mac, state_changed_at, expires, ip or "")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def signature_problem(
    key: bytes,
    signature: str,
    *,
    node_id: str,
    mac: str,
    state_changed_at: datetime,
    expires: int,
    ip: str | None,
    now: datetime,
) -> str | None:
    """Why a choice's signature is refused, or None when it holds (compared in constant
    time; the expiry is checked after the signature, so it cannot be probed unsigned)."""
    wanted = sign(key, node_id, mac, state_changed_at, expires, ip)
    if not hmac.compare_digest(wanted.encode(), signature.encode()):
        return "this menu was not served to this machine in its current state"
    if now.timestamp() > expires:
        return "this menu has expired"
    return None


def choice_url(server: str, mac: str, workflow_id: str, expires: int, signature: str) -> str:
    """The URL iPXE fetches when ``workflow_id`` is chosen."""
    query = urlencode({"mac": mac, "workflow": workflow_id, "expires": expires, "sig": signature})
    return f"{server.rstrip('/')}{MENU_PATH}?{query}"


def _item_text(text: str) -> str:
    """Menu text made inert: ``ipxe.safe``, and no word that could read as an option."""
    return " ".join("?" + word[1:] if word.startswith("-") else word for word in text.split())


def menu_script(
    *,
    node_id: str,
    mac: str,
    workflows: list[Workflow],
    urls: dict[str, str],
    timeout_seconds: int,
) -> str:
    """The iPXE menu: one item per workflow, the local disk by default after the timeout."""
    lines = [
        f"# provisioner: boot menu for node {ipxe.safe(node_id)}",
        f"menu provisioner: {ipxe.safe(mac)} is waiting for an operator",
        "item --gap Install a workflow (this erases the machine's disk):",
    ]
    for number, workflow in enumerate(workflows, start=1):
        text = _item_text(ipxe.safe(f"{workflow.name} ({workflow.id})"))
        # The first nine get a digit key: pressing it chooses the entry at once.
        key = f"--key {number} " if number <= MAX_KEYED else ""
        shown = f"{number}) " if number <= MAX_KEYED else ""
        lines.append(f"item {key}wf{number} {shown}{text}")
    lines += [
        "item --gap",
        f"item local Boot from local disk (chosen in {timeout_seconds} seconds)",
        f"choose --timeout {timeout_seconds * 1000} --default local target || goto local",
        "goto ${target}",
    ]
    for number, workflow in enumerate(workflows, start=1):
        lines += [
            f":wf{number}",
            f"echo provisioner: installing {ipxe.safe(workflow.id)}",
            f"chain --autofree {urls[workflow.id]} || goto refused",
        ]
    lines += [
        ":refused",
        "echo provisioner: the server refused the choice (the menu expired or the node "
        "changed); booting from local disk",
        f"sleep {ipxe.WAIT_SECONDS}",
        "exit",
        ":local",
        "echo provisioner: booting from local disk",
        "exit",
    ]
    return "\n".join((ipxe.HEADER, *lines)) + "\n"


def expiry(now: datetime, timeout_seconds: int) -> int:
    """When a menu's choice URLs stop working (Unix seconds)."""
    return int(now.timestamp()) + timeout_seconds + GRACE_SECONDS

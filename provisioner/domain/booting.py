"""Answering ``GET /api/v1/boot``: which iPXE script a machine gets, by its lifecycle state.

Most boots are of known machines that just boot locally; they are answered from a plain read.
Only what must change something (registering a machine, starting an install, a new IP, or a
``last_seen_at`` older than ``SEEN_RESOLUTION``) takes a write transaction, in which the node
is read again under lock and the decision made afresh.
"""

import logging
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

from sqlalchemy import Row
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.domain import ipxe
from provisioner.domain.boot_menu import MENU_STATES
from provisioner.domain.boot_menu import MenuSettings
from provisioner.domain.events import EventStatus
from provisioner.domain.events import EventType
from provisioner.domain.events import record_event
from provisioner.domain.groups import Facts
from provisioner.domain.groups import GroupRule
from provisioner.domain.groups import effective_workflow
from provisioner.domain.groups import winning_group
from provisioner.domain.hardware import architecture_mismatch
from provisioner.domain.inventory import add_discovered_node
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import transition
from provisioner.domain.report_tokens import install_report_token
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import handle_stall
from provisioner.domain.sweeper import stall_of
from provisioner.domain.tokens import new_token
from provisioner.domain.workflows import WorkflowError
from provisioner.domain.workflows import WorkflowStore
from provisioner.domain.workflows import boot_files
from provisioner.models import Node
from provisioner.store.node_tags import tags_of
from provisioner.store.nodes_repo import find_node
from provisioner.store.nodes_repo import glance_node
from provisioner.store.reads import SingleReads
from provisioner.store.transactions import write_transaction

log = logging.getLogger(__name__)

#: ``last_seen_at`` is refreshed at most this often by boots, so repeated boots stay reads.
SEEN_RESOLUTION = timedelta(seconds=60)

LOCAL_BOOT_REASONS = {
    State.DISCOVERED: "node {id} is discovered; waiting for an operator",
    State.INSTALLING: "node {id} is installing; booting the installed system",
    State.INSTALLED: "node {id} is installed; booting from local disk",
    State.ACTIVE: "node {id} is active; booting from local disk",
    State.INSTALL_FAILED: "node {id} failed to install: {error}",
    State.REPROVISION: "node {id} is marked for reprovisioning; waiting for an operator",
    State.RETIRED: "node {id} is retired",
}


@dataclass(frozen=True)
class BootRequest:
    """What a machine told us when it asked what to boot."""

    mac: str
    peer_ip: str | None = None
    system_uuid: str | None = None
    serial_number: str | None = None
    vendor: str | None = None
    model: str | None = None
    hostname: str | None = None
    arch: str | None = None
    boot_mode: str | None = None
    asset: str | None = None


#: Machine groups as matching sees them, read in the caller's session (a cache).
GroupSource = Callable[[Session | scoped_session[Session]], Sequence[GroupRule]]


@dataclass(frozen=True)
class BootSettings:
    """The configuration the boot decision depends on."""

    server_url: str
    auto_register: bool
    workflows: WorkflowStore
    rules: StallRules
    groups: GroupSource | None = None
    menu: MenuSettings | None = None
    #: The console boot menu's script for a node, or None (``provisioner.web.boot_menu``).
    menu_for: "Callable[[Node | Row, Sequence[str]], str | None] | None" = None


def answer_boot(
    session: Session | scoped_session[Session],
    request: BootRequest,
    settings: BootSettings,
    now: datetime,
    *,
    reads: SingleReads,
) -> str:
    """Return the iPXE script for ``request``, changing the node as its state requires.

    The first look at the node is a single read outside any transaction (``reads``): most
    boots end there, and never open a session. Every boot is logged in one line: the MAC,
    the node's state after it and what it was served.
    """
    answer = _decide(session, request, settings, now, reads=reads)
    log.info(
        "boot %s: %s, served %s",
        request.mac,
        answer.state,
        answer.served,
        extra={
            "mac": request.mac,
            "ip": request.peer_ip,
            "state": answer.state,
            "served": answer.served,
        },
    )
    return answer.script


@dataclass(frozen=True)
class BootAnswer:
    """The script for a boot, the node's state after it, and what was served, for the log."""

    script: str
    state: str
    served: str


def _decide(
    session: Session | scoped_session[Session],
    request: BootRequest,
    settings: BootSettings,
    now: datetime,
    *,
    reads: SingleReads,
) -> BootAnswer:
    seen = glance_node(reads, request.mac)
    if seen is None and not settings.auto_register:
        script = ipxe.local_boot(f"unknown machine {request.mac}; auto-registration is off")
        return BootAnswer(script, "unknown", "local boot (auto-registration is off)")
    if seen is not None and not _needs_write(seen, request, settings, now):
        menu = _menu(seen, settings, lambda: tags_of(reads, seen.id))
        if menu is not None:
            return BootAnswer(menu, seen.state, "boot menu")
        return BootAnswer(_local_boot_script(seen), seen.state, "local boot")
    with write_transaction(session):
        node = find_node(session, request.mac, for_update=True)
        stall = None
        if node is None:
            node = register_node(session, request, now)
            if not _auto_install(session, node, settings, now):
                menu = _menu(node, settings, lambda: ())
                if menu is not None:
                    return BootAnswer(menu, node.state, "boot menu (registered)")
                script = ipxe.registered(node.id, node.mac_address)
                return BootAnswer(script, node.state, "local boot (registered)")
        else:
            _record_sighting(node, request, now)
            stall = stall_of(node, settings.rules, now)
        if stall is not None:
            handle_stall(
                session, node, stall, rules=settings.rules, triggered_by=Trigger.BOOT, now=now
            )
        if node.state == State.PENDING:
            script, served = _start_install(session, node, settings, now)
            return BootAnswer(script, node.state, served)
        if stall is not None:
            script = ipxe.wait_and_exit(
                f"node {node.id} install failed after {node.install_attempts} attempts: "
                f"{node.last_install_error}"
            )
            return BootAnswer(script, node.state, "local boot (install failed)")
        menu = _menu(node, settings, lambda: node.tags)
        if menu is not None:
            return BootAnswer(menu, node.state, "boot menu")
        return BootAnswer(_local_boot_script(node), node.state, "local boot")


def _menu(
    node: Node | Row, settings: BootSettings, tags: Callable[[], Sequence[str]]
) -> str | None:
    """The boot menu's script when ``node`` gets one (its tags read only if they decide)."""
    menu = settings.menu
    if menu is None or settings.menu_for is None or node.state not in MENU_STATES:
        return None
    needs_tags = menu.needs_tags and node.boot_menu is None
    return settings.menu_for(node, tags() if needs_tags else ())


def _group(session: Session, node: Node, settings: BootSettings) -> GroupRule | None:
    """The machine group ``node`` belongs to now (None without groups)."""
    if settings.groups is None:
        return None
    rules = settings.groups(session)
    if not rules:
        return None
    tags = node.tags if any(rule.tags for rule in rules) else ()  # a query: only if it counts
    return winning_group(rules, Facts.of_node(node, tags))


def _auto_install(session: Session, node: Node, settings: BootSettings, now: datetime) -> bool:
    """Send a just-registered node to ``pending`` when its group says ``auto_install``."""
    group = _group(session, node, settings)
    if group is None or not group.auto_install:
        return False
    transition(
        session,
        node,
        State.PENDING,
        triggered_by=Trigger.GROUP,
        now=now,
        comment=f"auto_install: group {group.name}",
        metadata={"group": group.name, "workflow_id": group.workflow_id},
    )
    return True


def _needs_write(
    node: Node | Row, request: BootRequest, settings: BootSettings, now: datetime
) -> bool:
    return (
        node.state == State.PENDING
        or stall_of(node, settings.rules, now) is not None
        or node.last_seen_at is None
        or now - node.last_seen_at >= SEEN_RESOLUTION
        or bool(_new_facts(node, request))
    )


def _new_facts(node: Node | Row, request: BootRequest) -> dict[str, str]:
    """Facts in the request that differ from what the node has stored."""
    facts = {
        "ip_address": request.peer_ip,
        "system_uuid": request.system_uuid,
        "serial_number": request.serial_number,
        "vendor": request.vendor,
        "model": request.model,
        "arch": request.arch,
        "boot_mode": request.boot_mode,
        "asset_tag": request.asset,
    }
    return {key: value for key, value in facts.items() if value and getattr(node, key) != value}


def _record_sighting(node: Node, request: BootRequest, now: datetime) -> None:
    for key, value in _new_facts(node, request).items():
        setattr(node, key, value)
    if request.hostname and not node.hostname:
        node.hostname = request.hostname
    node.last_seen_at = now
    node.updated_at = now


def register_node(session: Session, request: BootRequest, now: datetime) -> Node:
    """Create a ``discovered`` node for a machine seen for the first time."""
    node = add_discovered_node(
        session,
        now,
        triggered_by=Trigger.BOOT,
        comment="registered by boot",
        mac_address=request.mac,
        hostname=request.hostname,
    )
    _record_sighting(node, request, now)
    record_event(
        session,
        node,
        EventType.DISCOVERED,
        now=now,
        message="registered by boot",
        ip_address=request.peer_ip,
        effect="registered as discovered",
    )
    return node


def _start_install(
    session: Session, node: Node, settings: BootSettings, now: datetime
) -> tuple[str, str]:
    """The installer's script (or why there is none), and what was served, for the log."""
    group = _group(session, node, settings)
    choice = effective_workflow(node.workflow_id, group)
    if not choice.workflow_id:
        reason = f"node {node.id} is pending but has no workflow assigned"
        if group is not None:
            reason += f" (its group {group.name} gives none)"
        return ipxe.wait_and_exit(reason), "local boot (no workflow assigned)"
    token = new_token()
    variables = boot_variables(
        node, settings.server_url, token, group.variables if group is not None else {}
    )
    try:
        workflow = settings.workflows.load(choice.workflow_id)
        files = boot_files(workflow, variables)
    except WorkflowError as exc:
        reason = f"workflow {choice.workflow_id} cannot be used: {exc}"
        served = f"local boot (workflow {choice.workflow_id} unusable)"
        return ipxe.wait_and_exit(reason), served
    mismatch = boot_mode_mismatch(workflow.boot_mode, node.boot_mode) or architecture_mismatch(
        workflow.architecture, node.arch
    )
    if mismatch:
        reason = f"node {node.id} stays pending: {mismatch}"
        record_event(
            session,
            node,
            EventType.BOOT_REFUSED,
            now=now,
            status=EventStatus.FAILED,
            message=f"workflow {workflow.id} not served: {mismatch}",
            metadata={"workflow_id": workflow.id, "arch": node.arch, "boot_mode": node.boot_mode},
            effect="stays pending",
        )
        served = f"local boot (does not fit: {node.arch}/{node.boot_mode})"
        return ipxe.wait_and_exit(reason), served
    install_report_token(node, token)
    attempt = node.install_attempts + 1
    transition(
        session,
        node,
        State.INSTALLING,
        triggered_by=Trigger.BOOT,
        now=now,
        comment=f"installer served: workflow {workflow.id}",
        metadata={"workflow_id": workflow.id, "attempt": attempt}
        | ({"group": choice.group} if choice.source == "group" else {}),
    )
    served = f"installer {workflow.id} (attempt {attempt})"
    return ipxe.install(files, workflow.name, node.id, workflow.boot_mode), served


def boot_mode_mismatch(wanted: str, booted: str | None) -> str | None:
    """Why a machine that booted in mode ``booted`` cannot run a ``wanted``-only workflow."""
    if wanted == "any" or booted is None or booted == wanted:
        return None
    return (
        f"the workflow needs {wanted.upper()} firmware but the machine booted in "
        f"{booted.upper()} mode: switch its firmware to {wanted.upper()} or assign a "
        f"workflow with boot_mode {booted} or any"
    )


def boot_variables(
    node: Node, server_url: str, report_token: str = "", extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The ``${variables}`` a workflow may use, for this node (``extra``: its group's, which
    never override the server's own)."""
    server = server_url.rstrip("/")
    return {
        **(extra or {}),
        "server": server,
        "assets": f"{server}/assets",
        "node_id": node.id,
        "mac": node.mac_address,
        "ip": node.ip_address or "",
        "hostname": node.hostname or default_hostname(node.mac_address),
        "report_url": f"{server}/api/v1/report",
        "report_token": report_token,
    }


def default_hostname(mac: str) -> str:
    """The host name of a node that has none: installers stop on an empty one."""
    return "node-" + "".join(character for character in mac.lower() if character.isalnum())


def _local_boot_script(node: Node | Row) -> str:
    if node.state == State.PENDING:  # only reached when a read found no write necessary
        return ipxe.local_boot(f"node {node.id} is pending")
    reason = LOCAL_BOOT_REASONS[State(node.state)]
    return ipxe.local_boot(reason.format(id=node.id, error=node.last_install_error or "unknown"))

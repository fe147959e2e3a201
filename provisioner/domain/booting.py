"""Answering ``GET /api/v1/boot``: which iPXE script a machine gets, by its lifecycle state.

Most boots are of known machines that just boot locally; they are answered from a plain read.
Only what must change something (registering a machine, starting an install, a new IP, or a
``last_seen_at`` older than ``SEEN_RESOLUTION``) takes a write transaction, in which the node
is read again under lock and the decision made afresh.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

from sqlalchemy import Row
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.domain import ipxe
from provisioner.domain.events import EventType
from provisioner.domain.events import record_event
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


@dataclass(frozen=True)
class BootSettings:
    """The configuration the boot decision depends on."""

    server_url: str
    auto_register: bool
    workflows: WorkflowStore
    rules: StallRules


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
        return BootAnswer(_local_boot_script(seen), seen.state, "local boot")
    with write_transaction(session):
        node = find_node(session, request.mac, for_update=True)
        if node is None:
            node = register_node(session, request, now)
            script = ipxe.registered(node.id, node.mac_address)
            return BootAnswer(script, node.state, "local boot (registered)")
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
        return BootAnswer(_local_boot_script(node), node.state, "local boot")


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
    if not node.workflow_id:
        reason = f"node {node.id} is pending but has no workflow assigned"
        return ipxe.wait_and_exit(reason), "local boot (no workflow assigned)"
    token = new_token()
    try:
        workflow = settings.workflows.load(node.workflow_id)
        files = boot_files(workflow, boot_variables(node, settings.server_url, token))
    except WorkflowError as exc:
        reason = f"workflow {node.workflow_id} cannot be used: {exc}"
        return ipxe.wait_and_exit(reason), f"local boot (workflow {node.workflow_id} unusable)"
    mismatch = boot_mode_mismatch(workflow.boot_mode, node.boot_mode)
    if mismatch:
        reason = f"node {node.id} stays pending: {mismatch}"
        return ipxe.wait_and_exit(reason), f"local boot (firmware: {node.boot_mode})"
    install_report_token(node, token)
    attempt = node.install_attempts + 1
    transition(
        session,
        node,
        State.INSTALLING,
        triggered_by=Trigger.BOOT,
        now=now,
        comment=f"installer served: workflow {workflow.id}",
        metadata={"workflow_id": workflow.id, "attempt": attempt},
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


def boot_variables(node: Node, server_url: str, report_token: str = "") -> dict[str, str]:
    """The ``${variables}`` a workflow may use, for this node."""
    server = server_url.rstrip("/")
    return {
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

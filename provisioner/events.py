"""Recording node events and applying a node's report to its lifecycle.

Every report becomes a ``NodeEvent`` (even one that does not fit the node's state: it is kept
with an ``effect`` saying why it was ignored, and is never an HTTP error, so an installer does
not retry it forever). Reports that fit move the node through ``lifecycle``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.database import order_event_ids
from provisioner.lifecycle import PENDING_CHANGES
from provisioner.lifecycle import State
from provisioner.lifecycle import Trigger
from provisioner.lifecycle import record_install_failure
from provisioner.lifecycle import transition
from provisioner.models import Node
from provisioner.models import NodeEvent

#: ``session.info`` key listing (type, status) of events recorded in the current transaction.
PENDING_EVENTS = "provisioner.events"


class EventType(StrEnum):
    """Kinds of ``NodeEvent``: seven a node reports, two the server writes."""

    BOOT_STARTED = "boot_started"
    INSTALL_STARTED = "install_started"
    INSTALL_PROGRESS = "install_progress"
    INSTALL_COMPLETE = "install_complete"
    INSTALL_FAILED = "install_failed"
    FIRST_BOOT = "first_boot"
    HEARTBEAT = "heartbeat"
    INSTALL_TIMEOUT = "install_timeout"
    DISCOVERED = "discovered"


class EventStatus(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"


REPORTED_TYPES = [
    EventType.BOOT_STARTED,
    EventType.INSTALL_STARTED,
    EventType.INSTALL_PROGRESS,
    EventType.INSTALL_COMPLETE,
    EventType.INSTALL_FAILED,
    EventType.FIRST_BOOT,
    EventType.HEARTBEAT,
]
ALL_TYPES = [event_type.value for event_type in EventType]

#: The legacy ``installation_status`` values and the event each stands for.
LEGACY_STATUS = {
    "started": EventType.INSTALL_STARTED,
    "progress": EventType.INSTALL_PROGRESS,
    "complete": EventType.INSTALL_COMPLETE,
    "failed": EventType.INSTALL_FAILED,
}

#: Node columns a report may fill in.
HARDWARE_FIELDS = ("ip_address", "hostname", "vendor", "model", "serial_number", "system_uuid")


@dataclass(frozen=True)
class Report:
    """A validated ``POST /api/v1/report`` body, legacy fields already mapped."""

    event_type: EventType | None
    status: str = EventStatus.SUCCESS
    message: str | None = None
    progress: int | None = None
    metadata: dict[str, Any] | None = None
    client_event_id: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What applying an event did: the ``effect`` stored and the message for the reporter."""

    effect: str
    message: str
    event: NodeEvent | None = None


def report_from_body(body: dict[str, Any]) -> Report:
    """Build a ``Report`` from a validated body, mapping the legacy ``installation_*`` fields."""
    event_type = body.get("event")
    if event_type is None and body.get("installation_status"):
        event_type = LEGACY_STATUS[body["installation_status"]]
    event_type = EventType(event_type) if event_type else None
    progress = body.get("progress")
    if progress is None:
        progress = body.get("installation_progress")
    message = body.get("message")
    if message is None and event_type == EventType.INSTALL_FAILED:
        message = body.get("installation_error")
    status = body.get("status") or (
        EventStatus.FAILED if event_type == EventType.INSTALL_FAILED else EventStatus.SUCCESS
    )
    return Report(
        event_type=event_type,
        status=status,
        message=message,
        progress=progress,
        metadata=body.get("event_metadata"),
        client_event_id=body.get("event_id"),
        hardware={key: body[key] for key in HARDWARE_FIELDS if body.get(key) is not None},
    )


def add_event(session: Session, event: NodeEvent) -> NodeEvent:
    """Add an event row and tell the commit's observers (metrics, webhooks) about it.

    The node's ``last_event_*`` columns are the caller's to set (``record_event`` does).
    """
    order_event_ids(session)
    session.add(event)
    session.info.setdefault(PENDING_EVENTS, []).append((str(event.event_type), str(event.status)))
    session.info.setdefault(PENDING_CHANGES, []).append(event)
    return event


@dataclass(frozen=True)
class Recorded:
    """An event inserted in bulk (no ORM object), as the webhook outbox reads it."""

    node_id: str
    event_type: str
    message: str | None
    created_at: datetime


def insert_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert many event rows (``NodeEvent`` attribute names as keys) in one ``executemany``.

    The bulk form of ``add_event``, for the sweeper: the commit's observers hear of each.
    """
    if not rows:
        return
    order_event_ids(session)
    session.execute(insert(NodeEvent), rows)
    session.info.setdefault(PENDING_EVENTS, []).extend(
        (str(row["event_type"]), str(row["status"])) for row in rows
    )
    session.info.setdefault(PENDING_CHANGES, []).extend(
        Recorded(row["node_id"], row["event_type"], row.get("message"), row["created_at"])
        for row in rows
    )


def record_event(
    session: Session,
    node: Node,
    event_type: str,
    *,
    now: datetime,
    status: str = EventStatus.SUCCESS,
    message: str | None = None,
    progress: int | None = None,
    metadata: dict[str, Any] | None = None,
    ip_address: str | None = None,
    effect: str | None = None,
    client_event_id: str | None = None,
    note_on_node: bool = True,
) -> NodeEvent:
    """Append an event to the node's log and note it on the node, in the caller's transaction.

    ``note_on_node=False`` records without touching the node (a stale report must neither
    show as the node's last event nor reset its silence clock).
    """
    event = add_event(
        session,
        NodeEvent(
            node_id=node.id,
            event_type=event_type,
            status=status,
            message=message,
            progress=progress,
            metadata_=metadata,
            ip_address=ip_address,
            effect=effect,
            client_event_id=client_event_id,
            created_at=now,
        ),
    )
    if not note_on_node:
        return event
    node.last_event_type = event_type
    node.last_event_status = status
    node.last_event_at = now
    node.updated_at = now
    return event


def find_replayed(session: Session, node: Node, client_event_id: str | None) -> NodeEvent | None:
    """The event already recorded under this client-chosen id, if the report is a retry."""
    if client_event_id is None:
        return None
    return session.scalars(
        select(NodeEvent).where(
            NodeEvent.node_id == node.id, NodeEvent.client_event_id == client_event_id
        )
    ).one_or_none()


def _moved(entry_from: str, entry_to: str) -> str:
    return f"{entry_from}→{entry_to}"


def _ignored(node: Node, event_type: str) -> Outcome:
    return Outcome(
        f"ignored: node is {node.state}",
        f"Event {event_type} recorded but ignored: node is {node.state}",
    )


class _Apply:
    """The effect of each reported event type on a node (one method per type)."""

    def __init__(self, session: Session, node: Node, now: datetime, max_attempts: int) -> None:
        self.session = session
        self.node = node
        self.now = now
        self.max_attempts = max_attempts

    def _move(self, target: State, comment: str, metadata: dict[str, Any] | None = None) -> str:
        before = self.node.state
        transition(
            self.session,
            self.node,
            target,
            triggered_by=Trigger.NODE_REPORT,
            now=self.now,
            comment=comment,
            metadata=metadata,
        )
        return _moved(before, target)

    def boot_started(self, report: Report) -> Outcome:
        return Outcome("logged", "Boot started event logged")

    def heartbeat(self, report: Report) -> Outcome:
        return Outcome("logged", "Heartbeat received")

    def install_started(self, report: Report) -> Outcome:
        if self.node.state == State.PENDING:
            effect = self._move(State.INSTALLING, "installer reported start")
            return Outcome(effect, "Installation started")
        if self.node.state == State.INSTALLING:
            return Outcome("logged: already installing", "Installation started")
        return _ignored(self.node, EventType.INSTALL_STARTED)

    def install_progress(self, report: Report) -> Outcome:
        if self.node.state != State.INSTALLING:
            return _ignored(self.node, EventType.INSTALL_PROGRESS)
        if report.progress is not None:
            self.node.progress = report.progress
        shown = self.node.progress if self.node.progress is not None else 0
        return Outcome(f"progress {shown}%", f"Installation progress: {shown}%")

    def install_complete(self, report: Report) -> Outcome:
        if self.node.state != State.INSTALLING:
            return _ignored(self.node, EventType.INSTALL_COMPLETE)
        effect = self._move(State.INSTALLED, "installer reported completion")
        return Outcome(effect, "Installation completed")

    def install_failed(self, report: Report) -> Outcome:
        if self.node.state != State.INSTALLING:
            return _ignored(self.node, EventType.INSTALL_FAILED)
        before = self.node.state
        error = report.message or "installer reported a failure"
        record_install_failure(
            self.session,
            self.node,
            error,
            max_attempts=self.max_attempts,
            triggered_by=Trigger.NODE_REPORT,
            now=self.now,
        )
        attempts = self.node.install_attempts
        effect = f"{_moved(before, self.node.state)} (attempt {attempts} of {self.max_attempts})"
        if self.node.state == State.PENDING:
            return Outcome(effect, f"Installation failed (attempt {attempts}), will retry")
        return Outcome(effect, f"Installation failed after {attempts} attempts")

    def first_boot(self, report: Report) -> Outcome:
        if self.node.state != State.INSTALLED:
            return _ignored(self.node, EventType.FIRST_BOOT)
        effect = self._move(State.ACTIVE, "first boot reported", metadata=report.metadata)
        return Outcome(effect, "First boot - node now active")


def apply_report(
    session: Session,
    node: Node,
    report: Report,
    *,
    peer_ip: str | None,
    max_attempts: int,
    now: datetime,
    stale: bool = False,
) -> Outcome:
    """Apply ``report`` to ``node`` and record it, in the caller's write transaction.

    A ``stale`` report (sent with the previous install attempt's token) is recorded but
    changes nothing on the node.
    """
    if not stale:
        for key, value in report.hardware.items():
            setattr(node, key, value)
        node.last_seen_at = now
        node.updated_at = now
    if report.event_type is None:
        return Outcome("", "Status reported successfully")
    if stale:
        outcome = Outcome(
            "ignored: report from a previous install attempt",
            f"Event {report.event_type} recorded but ignored: it belongs to a previous "
            "install attempt",
        )
    else:
        handler: Callable[[Report], Outcome] = getattr(
            _Apply(session, node, now, max_attempts), report.event_type.value
        )
        outcome = handler(report)
    event = record_event(
        session,
        node,
        report.event_type,
        now=now,
        status=report.status,
        message=report.message,
        progress=report.progress,
        metadata=report.metadata,
        ip_address=peer_ip,
        effect=outcome.effect,
        client_event_id=report.client_event_id,
        note_on_node=not stale,
    )
    return Outcome(outcome.effect, outcome.message, event)

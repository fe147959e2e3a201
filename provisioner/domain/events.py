"""Node events: their types, and recording them in the caller's transaction.

A ``NodeEvent`` is one lifecycle signal in the append-only audit log: what a node reported
(``reports`` decides what a report does) or what the server noticed about it (the sweeper's
``install_timeout``, a boot's ``discovered``).
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.changes import changes
from provisioner.store.postgres import order_event_ids
from provisioner.store.writes import defer_write
from provisioner.store.writes import insert_rows


class EventType(StrEnum):
    """Kinds of ``NodeEvent``: seven a node reports, three the server writes."""

    BOOT_STARTED = "boot_started"
    INSTALL_STARTED = "install_started"
    INSTALL_PROGRESS = "install_progress"
    INSTALL_COMPLETE = "install_complete"
    INSTALL_FAILED = "install_failed"
    FIRST_BOOT = "first_boot"
    HEARTBEAT = "heartbeat"
    INSTALL_TIMEOUT = "install_timeout"
    DISCOVERED = "discovered"
    # Power control (provisioner.domain.power): requests, results, settings changes.
    POWER_REQUESTED = "power_requested"
    POWER_ON = "power_on"
    POWER_OFF = "power_off"
    POWER_CYCLE = "power_cycle"
    POWER_STATUS = "power_status"
    POWER_PXE = "power_pxe"
    POWER_NETBOOT = "power_netboot"
    POWER_FAILED = "power_failed"
    POWER_CONFIGURED = "power_configured"
    ASSET_SERVED = "asset_served"
    #: A pending node's workflow does not fit the machine (architecture or firmware).
    BOOT_REFUSED = "boot_refused"


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


def add_event(session: Session, event: NodeEvent) -> NodeEvent:
    """Add an event row and tell the commit's observers (metrics, webhooks) about it.

    The node's ``last_event_*`` columns are the caller's to set (``record_event`` does).
    """
    order_event_ids(session)
    session.add(event)
    noted = changes(session)
    noted.events.append((str(event.event_type), str(event.status)))
    noted.rows.append(event)
    return event


@dataclass(frozen=True)
class Recorded:
    """An event inserted in bulk (no ORM object), as the webhook outbox reads it."""

    node_id: str
    event_type: str
    message: str | None
    created_at: datetime


_INSERT_EVENT = insert(NodeEvent.__table__)


def insert_events(
    session: Session,
    rows: list[dict[str, Any]],
    *,
    same: dict[str, Any] | None = None,
    key: str | None = None,
) -> None:
    """Insert event rows (column names as keys) with plain statements, no ORM objects.

    The statement form of ``add_event``, for the sweeper's batches and for reports that move
    nothing: the commit's observers hear of each row. ``same`` holds the columns every row
    shares. Rows about one node, named by ``key`` (its MAC), may be held back to the end of
    the transaction (``writes.defer_write``); without a key, all rows go in one statement
    (``writes.insert_rows``).
    """
    if not rows:
        return
    order_event_ids(session)
    same = same or {}
    if key is None:
        insert_rows(session, NodeEvent.__table__, rows, same=same)
    rows = [same | row for row in rows] if same else rows
    if key is not None:
        for row in rows:
            defer_write(session, _INSERT_EVENT, row, key)
    noted = changes(session)
    noted.events.extend((str(row["event_type"]), str(row["status"])) for row in rows)
    noted.rows.extend(
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

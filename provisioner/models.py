"""The tables: nodes, their tags, their state log and event log. Columns and relations only."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy import inspect
from sqlalchemy import select
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import WriteOnlyMapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import object_session
from sqlalchemy.orm import relationship

from provisioner.coltypes import UTCDateTime
from provisioner.extensions import db
from provisioner.timeutil import utcnow


def new_id() -> str:
    """Return a fresh node id (a UUID4 string)."""
    return str(uuid.uuid4())


class Node(db.Model):
    """A machine known to the server, identified by its boot MAC address."""

    __tablename__ = "nodes"

    __table_args__ = (Index("ix_nodes_state_changed", "state", "state_changed_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    mac_address: Mapped[str] = mapped_column(String(17), unique=True)
    hostname: Mapped[str | None] = mapped_column(String(253))
    ip_address: Mapped[str | None] = mapped_column(String(45))
    # (state, state_changed_at) serves the sweeper's "installing since before X" scan.
    state: Mapped[str] = mapped_column(String(20))
    workflow_id: Mapped[str | None] = mapped_column(String(64))
    vendor: Mapped[str | None] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255))
    serial_number: Mapped[str | None] = mapped_column(String(255))
    system_uuid: Mapped[str | None] = mapped_column(String(36))
    arch: Mapped[str | None] = mapped_column(String(32))
    boot_mode: Mapped[str | None] = mapped_column(String(16))
    install_attempts: Mapped[int] = mapped_column(Integer, default=0)
    install_timeouts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    episode_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_install_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set explicitly by every writer from its (injectable) clock; no onupdate default.
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    progress: Mapped[int | None] = mapped_column(Integer)
    last_event_type: Mapped[str | None] = mapped_column(String(32))
    last_event_status: Mapped[str | None] = mapped_column(String(16))
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report_token_hash: Mapped[str | None] = mapped_column(String(64))
    previous_report_token_hash: Mapped[str | None] = mapped_column(String(64))
    # iPXE's ${asset} (the SMBIOS asset tag), sent by the chain script like the facts above.
    asset_tag: Mapped[str | None] = mapped_column(String(255))
    # The console boot menu for this node: None follows BOOT_MENU_TAGS, True always offers
    # it (while BOOT_MENU is on), False never does.
    boot_menu: Mapped[bool | None] = mapped_column(Boolean)

    tag_rows: Mapped[list["NodeTag"]] = relationship(
        back_populates="node",
        cascade="all, delete-orphan",
        passive_deletes=True,
        # Loaded when a view shows tags (lists ask for them in one go with selectinload);
        # the boot path never needs them and must not pay a second query per node.
        lazy="select",
        order_by="NodeTag.tag",
    )
    state_logs: Mapped[list["NodeStateLog"]] = relationship(
        back_populates="node",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="NodeStateLog.id",
    )

    # Write-only: a node may have thousands of events; they are queried, never loaded whole.
    events: WriteOnlyMapped["NodeEvent"] = relationship(
        back_populates="node",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="NodeEvent.id",
    )

    @property
    def tags(self) -> list[str]:
        """The node's tags, sorted.

        When the tag rows were not loaded with the node, one plain query fetches the names:
        the ORM's lazy loader costs more than the rest of a node report put together.
        """
        if "tag_rows" not in inspect(self).unloaded:
            return sorted(row.tag for row in self.tag_rows)
        session = object_session(self)
        if session is None:
            return []
        query = select(NodeTag.tag).where(NodeTag.node_id == self.id).order_by(NodeTag.tag)
        return list(session.scalars(query))

    @property
    def last_event(self) -> dict[str, Any] | None:
        """Type, status and time of the newest event, kept on the node for cheap listing."""
        return last_event_of(self.last_event_type, self.last_event_status, self.last_event_at)


def last_event_of(
    event_type: str | None, status: str | None, at: datetime | None
) -> dict[str, Any] | None:
    """A node's ``last_event`` from its three ``last_event_*`` columns."""
    if event_type is None:
        return None
    return {"type": event_type, "status": status, "at": at}


class NodeTag(db.Model):
    """One tag on one node."""

    __tablename__ = "node_tags"

    node_id: Mapped[str] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)

    node: Mapped[Node] = relationship(back_populates="tag_rows")


class NodeStateLog(db.Model):
    """One state change of a node: who moved it, from where to where, and why."""

    __tablename__ = "node_state_logs"
    __table_args__ = (Index("ix_node_state_logs_node_id_id", "node_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    triggered_by: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    node: Mapped[Node] = relationship(back_populates="state_logs")


class NodeEvent(db.Model):
    """One lifecycle signal, append-only: what a node (or the server about it) reported.

    ``id`` increases with every insert, so it breaks ties between equal ``created_at`` values
    and serves as the cursor of the event stream.
    """

    __tablename__ = "node_events"
    __table_args__ = (
        UniqueConstraint("node_id", "client_event_id", name="uq_node_events_client_event_id"),
        Index("ix_node_events_node_id_created_at", "node_id", "created_at", "id"),
        # Never reuse the id of a deleted newest event: the id is the stream cursor.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int | None] = mapped_column(Integer)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    effect: Mapped[str | None] = mapped_column(String(255))
    client_event_id: Mapped[str | None] = mapped_column(String(128))
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    node: Mapped[Node] = relationship(back_populates="events")


class WebhookDelivery(db.Model):
    """One notification for one receiver, in the outbox until it is delivered or a day old.

    Written in the transaction that made the change it reports, so a change and its
    notification commit (or roll back) together; the delivery job sends it afterwards.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The delivery job's scan: "undelivered and due", oldest first.
        Index("ix_webhook_deliveries_due", "delivered_at", "next_attempt_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Sent as X-Provisioner-Delivery, the same on every retry, so a receiver can deduplicate.
    uuid: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class NodePower(db.Model):
    """How the server reaches a node's power control (its BMC, or Wake-on-LAN).

    One row per node that has a driver other than ``manual`` (no row means ``manual``). The
    password is a Fernet token made with a key kept outside the database
    (``provisioner.power.secrets``); no API, page, log or webhook ever shows it.
    """

    __tablename__ = "node_power"

    node_id: Mapped[str] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    driver: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(512))
    username: Mapped[str | None] = mapped_column(String(255))
    password_encrypted: Mapped[str | None] = mapped_column(Text)
    # The last state a status check or action saw ("on", "off"), and when.
    power_state: Mapped[str | None] = mapped_column(String(16))
    power_state_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PowerAction(db.Model):
    """One requested power action (on, off, cycle, status, pxe, netboot) and its outcome."""

    __tablename__ = "power_actions"
    __table_args__ = (
        Index("ix_power_actions_node_id_id", "node_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16))
    # queued -> running -> succeeded | failed
    status: Mapped[str] = mapped_column(String(16), index=True)
    requested_by: Mapped[str] = mapped_column(String(20))
    result: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MachineGroup(db.Model):
    """A rule that matches machines by their facts and gives them a workflow and variables.

    Matching and precedence are ``provisioner.domain.groups``'s; every write bumps
    ``MachineGroupsVersion`` in the same transaction, so each instance's cache of the
    groups knows when to reload.
    """

    __tablename__ = "machine_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    mac_prefix: Mapped[str | None] = mapped_column(String(17))
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    architecture: Mapped[str | None] = mapped_column(String(32))
    platform: Mapped[str | None] = mapped_column(String(16))
    manufacturer: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    serial: Mapped[str | None] = mapped_column(String(255))
    uuid: Mapped[str | None] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(64))
    variables: Mapped[dict[str, str] | None] = mapped_column(JSON)
    auto_install: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MachineGroupsVersion(db.Model):
    """One row: a counter every change to ``machine_groups`` increments."""

    __tablename__ = "machine_groups_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)

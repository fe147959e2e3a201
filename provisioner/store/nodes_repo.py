"""Looking nodes up: by id, by MAC, or by whichever of the two a URL holds."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row
from sqlalchemy import bindparam
from sqlalchemy import func
from sqlalchemy import literal_column
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import normalize_mac
from provisioner.models import Node
from provisioner.models import NodeTag
from provisioner.models import last_event_of
from provisioner.store.reads import SingleReads
from provisioner.store.writes import settle_writes

_NODES = Node.__table__
_NODE_ROW_BY_MAC = select(_NODES).where(_NODES.c.mac_address == bindparam("mac"))
#: Tags travel with the row as one string (tags never hold a comma), saving a query. The
#: separator is SQL text: given as a Python string it is a "post-compile" parameter, and
#: the statement's SQL string would be rebuilt on every execution (a third of its cost).
_TAG_LIST = (
    select(func.aggregate_strings(NodeTag.tag, literal_column("','")))
    .where(NodeTag.node_id == _NODES.c.id)
    .scalar_subquery()
    .label("tag_list")
)
_NODE_WITH_TAGS = select(_NODES, _TAG_LIST)
_NODE_ROW_WITH_TAGS_LOCKED = _NODE_WITH_TAGS.where(
    _NODES.c.mac_address == bindparam("mac")
).with_for_update()


def glance_node(reads: SingleReads, mac: str) -> Row | None:
    """The node's columns as a plain row (see ``peek_node_for_update``), read outside any
    transaction."""
    return reads.first(_NODE_ROW_BY_MAC, {"mac": mac})


def peek_node_for_update(session: Session, mac: str) -> Row | None:
    """The node's columns and ``tag_list`` as a plain row, locked, in the session's transaction.

    A Core row skips the ORM's identity map and attribute instrumentation, which cost about
    as much as the query itself on hot paths. The row is locked on PostgreSQL; SQLite's
    write transaction already excludes other writers. Writes about the node that the
    transaction holds back (``writes.defer_write``) are sent first.
    """
    settle_writes(session, mac)
    return session.connection().execute(_NODE_ROW_WITH_TAGS_LOCKED, {"mac": mac}).first()


def node_rows(session: Session, ids: list[str]) -> list[Row]:
    """The nodes with these ids, as plain rows with their ``tag_list``."""
    return session.execute(_NODE_WITH_TAGS.where(_NODES.c.id.in_(ids))).all()


def node_mapping(row: Row, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A node row (with ``tag_list``) as the node schema reads it: its columns, updated by
    ``changes``, its sorted ``tags`` and its ``last_event``."""
    node = dict(row._mapping) | dict(changes or {})
    tag_list = node.pop("tag_list", None)
    node["tags"] = sorted(tag_list.split(",")) if tag_list else []
    node["last_event"] = last_event_of(
        node["last_event_type"], node["last_event_status"], node["last_event_at"]
    )
    return node


def find_node(session: Session, mac: str, *, for_update: bool = False) -> Node | None:
    """The node with this (normalised) MAC; ``for_update`` locks its row and re-reads it."""
    settle_writes(session, mac)
    query = select(Node).where(Node.mac_address == mac)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def find_by_ref(session: Session, ref: str, *, for_update: bool = False) -> Node | None:
    """The node named by ``ref``: a MAC address in any accepted form, else a node id."""
    try:
        condition = Node.mac_address == normalize_mac(ref)
    except InvalidMac:
        condition = Node.id == ref
    query = select(Node).where(condition)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def peek_node_by_ref_for_update(session: Session, ref: str) -> Row | None:
    """``peek_node_for_update`` for the node named by ``ref`` (as ``find_by_ref`` reads it):
    a MAC address in any accepted form, else a node id."""
    try:
        mac = normalize_mac(ref)
    except InvalidMac:
        settle_writes(session)  # the MAC the held-back writes are filed under is unknown
        condition = _NODES.c.id == ref
    else:
        settle_writes(session, mac)
        condition = _NODES.c.mac_address == mac
    return session.connection().execute(_NODE_WITH_TAGS.where(condition).with_for_update()).first()

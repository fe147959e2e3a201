"""Looking nodes up: by id, by MAC, or by whichever of the two a URL holds."""

from sqlalchemy import Row
from sqlalchemy import bindparam
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioner.macaddr import InvalidMac
from provisioner.macaddr import normalize_mac
from provisioner.models import Node

_NODE_ROW_BY_MAC = select(Node.__table__).where(Node.__table__.c.mac_address == bindparam("mac"))
_NODE_ROW_BY_MAC_LOCKED = _NODE_ROW_BY_MAC.with_for_update()


def peek_node(session: Session, mac: str, *, for_update: bool = False) -> Row | None:
    """The node's columns as a plain row, for decisions on hot paths.

    A Core row skips the ORM's identity map and attribute instrumentation, which cost about
    as much as the query itself on the boot path. ``for_update`` locks the row (PostgreSQL;
    SQLite's write transaction already excludes other writers).
    """
    query = _NODE_ROW_BY_MAC_LOCKED if for_update else _NODE_ROW_BY_MAC
    return session.connection().execute(query, {"mac": mac}).first()


def find_node(session: Session, mac: str, *, for_update: bool = False) -> Node | None:
    """The node with this (normalised) MAC; ``for_update`` locks its row and re-reads it."""
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

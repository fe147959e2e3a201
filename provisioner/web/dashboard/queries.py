"""What the dashboard pages read: filtered node lists, tags, and the stalled count."""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm import selectinload

from provisioner.domain.lifecycle import STATE_NAMES
from provisioner.domain.scrape import stalled_counts
from provisioner.domain.sweeper import StallRules
from provisioner.models import Node
from provisioner.models import NodeTag
from provisioner.store.reads import page_with_total

#: Rows on one page of the nodes table; filters narrow a larger inventory.
PAGE_SIZE = 200


@dataclass(frozen=True)
class NodeFilters:
    """The nodes table's filters, as the query string carries them."""

    state: str = ""
    tag: str = ""
    q: str = ""

    @classmethod
    def from_args(cls, args: dict[str, str]) -> "NodeFilters":
        """Read the filters; an unknown state is dropped rather than matching nothing."""
        state = args.get("state", "")
        return cls(
            state=state if state in STATE_NAMES else "",
            tag=args.get("tag", "").strip()[:50],
            q=args.get("q", "").strip()[:100],
        )

    def as_args(self) -> dict[str, str]:
        """The filters that are set, for building URLs."""
        return {key: value for key, value in vars(self).items() if value}


def search_condition(text: str) -> ColumnElement[bool]:
    """Nodes whose MAC or hostname contains ``text`` (case-insensitive; ``-`` matches ``:``)."""
    needle = text.lower()
    return or_(
        Node.mac_address.contains(needle.replace("-", ":"), autoescape=True),
        func.lower(Node.hostname).contains(needle, autoescape=True),
    )


def filtered_nodes(session: Session, filters: NodeFilters) -> tuple[list[Node], int]:
    """A page of the nodes matching ``filters`` (oldest first) and how many match."""
    query = select(Node)
    if filters.state:
        query = query.where(Node.state == filters.state)
    if filters.tag:
        query = query.where(Node.id.in_(select(NodeTag.node_id).where(NodeTag.tag == filters.tag)))
    if filters.q:
        query = query.where(search_condition(filters.q))
    return page_with_total(
        session,
        query.options(selectinload(Node.tag_rows)),
        order_by=(Node.created_at, Node.id),
        limit=PAGE_SIZE,
        offset=0,
    )


def all_tags(session: Session) -> list[str]:
    """Every tag in use, sorted, for the tag filter."""
    return list(session.scalars(select(NodeTag.tag).distinct().order_by(NodeTag.tag)))


def stalled_total(session: Session, rules: StallRules, now: datetime) -> int:
    """How many nodes the stalled feed lists (one cheap count per rule)."""
    return sum(stalled_counts(session, rules, now).values())

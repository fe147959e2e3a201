"""A node's tags, read outside any transaction (the boot menu's tag limit needs them)."""

from sqlalchemy import bindparam
from sqlalchemy import func
from sqlalchemy import literal_column
from sqlalchemy import select

from provisioner.models import NodeTag
from provisioner.store.reads import SingleReads

_TAGS = select(func.aggregate_strings(NodeTag.tag, literal_column("','"))).where(
    NodeTag.node_id == bindparam("node_id")
)


def tags_of(reads: SingleReads, node_id: str) -> list[str]:
    """The node's tags (tags never hold a comma), in one read."""
    row = reads.first(_TAGS, {"node_id": node_id})
    return row[0].split(",") if row is not None and row[0] else []

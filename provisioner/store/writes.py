"""Writes sent in bulk: held back to the end of a transaction (``defer_write``), or many
rows in one statement (``insert_rows``)."""

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import Executable
from sqlalchemy import Insert
from sqlalchemy import Integer
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import column
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import Session

#: Where a session keeps its ``DeferredWrites`` while ``deferring_writes``; read and written
#: only in this module (callers name the session, never the key).
_DEFERRED_WRITES = "provisioner.deferred_writes"


class DeferredWrites:
    """Plain statements held back to the end of a transaction and sent together.

    The group-commit writer applies many reports in one transaction; each one's UPDATE and
    INSERT cost more in SQLAlchemy's execution than in SQLite. Held back, each statement runs
    once for all its rows (``executemany``). Every write names the ``key`` (a node's MAC) it
    is about; a read of that key first ``settle_writes``, so no read in the transaction can
    miss a write made before it. Rows are grouped by statement and columns, so two held-back
    writes are sent in no particular order: writes about one key that depend on each other's
    order need a settling read between them, as every report reads its node before writing.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[Executable, frozenset[str]], list[dict[str, Any]]] = {}
        self.keys: set[str] = set()

    def add(self, statement: Executable, row: dict[str, Any], key: str) -> None:
        # executemany needs one set of columns: rows are grouped by statement and columns.
        self.rows.setdefault((statement, frozenset(row)), []).append(row)
        self.keys.add(key)

    def flush(self, session: Session) -> None:
        rows, self.rows, self.keys = self.rows, {}, set()
        for (statement, _), parameters in rows.items():
            session.connection().execute(statement, parameters)


@contextmanager
def deferring_writes(session: Session) -> Iterator[DeferredWrites]:
    """Hold back ``defer_write`` statements in the block and send them at its end."""
    writes = session.info[_DEFERRED_WRITES] = DeferredWrites()
    try:
        yield writes
        writes.flush(session)
    finally:
        del session.info[_DEFERRED_WRITES]


def defer_write(session: Session, statement: Executable, row: dict[str, Any], key: str) -> None:
    """Execute ``statement`` with ``row`` now, or at the end of ``deferring_writes``."""
    writes = session.info.get(_DEFERRED_WRITES)
    if writes is None:
        session.connection().execute(statement, row)
    else:
        writes.add(statement, row, key)


def settle_writes(session: Session, key: str | None = None) -> None:
    """Send the held-back writes about ``key`` (all of them if None) before a read."""
    writes = session.info.get(_DEFERRED_WRITES)
    if writes is not None and (key is None or key in writes.keys):
        writes.flush(session)


def insert_rows(
    session: Session, table: Table, rows: list[dict[str, Any]], *, same: dict[str, Any]
) -> None:
    """Insert many rows with one statement and one parameter: the bulk insert of set writes.

    ``rows`` hold the columns that differ from row to row, the same keys in every row, as
    JSON values (str, int, dict, None); ``same`` holds the columns every row shares (a
    timestamp, say), bound once with their column's type. The rows travel as one JSON
    array that the database unpacks (``json_each`` on SQLite, ``json_array_elements`` on
    PostgreSQL) into an ``INSERT ... SELECT``, in their order. An ``executemany`` costs
    SQLAlchemy a few dozen microseconds of parameter processing per row, more than the
    database takes to insert it.
    """
    if not rows:
        return
    statement = _insert_rows_statement(
        table, tuple(rows[0]), tuple(same), session.get_bind().dialect.name
    )
    session.execute(statement, {_ROWS: rows, **same})


_ROWS = "provisioner_rows"


@functools.cache
def _insert_rows_statement(
    table: Table, varying: tuple[str, ...], same: tuple[str, ...], dialect: str
) -> Insert:
    rows = bindparam(_ROWS, type_=JSON)
    if dialect == "sqlite":
        row = func.json_each(rows).table_valued(column("value", JSON), "key").alias("row")
        position = row.c.key
    else:
        row = (
            func.json_array_elements(rows)
            .table_valued(column("value", JSON), with_ordinality="position")
            .render_derived(name="row")
        )
        position = row.c.position
    values = []
    for name in varying:
        kind, value = table.c[name].type, row.c.value[name]
        if isinstance(kind, JSON):
            values.append(value)
        elif isinstance(kind, Integer):
            values.append(value.as_integer())
        else:
            values.append(value.as_string())
    values += [bindparam(name, type_=table.c[name].type) for name in same]
    ordered = select(*values).select_from(row).order_by(position)
    return insert(table).from_select([*varying, *same], ordered)

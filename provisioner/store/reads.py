"""Reads: single statements outside any transaction (``SingleReads``), and paged queries."""

import threading
import weakref
from typing import Any

from sqlalchemy import Executable
from sqlalchemy import Row
from sqlalchemy import Select
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session
from sqlalchemy.pool import NullPool

from provisioner.store.sqlite import on_read_connect


class SingleReads:
    """Single read statements outside any transaction, for hot read paths (a boot of a
    known machine): no session and no identity map.

    On a SQLite file each thread keeps a connection of its own, opened by its first read,
    on a second engine whose connections never begin a transaction: one SELECT is its own
    snapshot, and taking a pooled connection and giving it back cost as much as the read.
    A thread's connection is closed when the thread ends, by ``dispose``, or when this
    object is collected. Elsewhere (PostgreSQL, where a kept connection would miss a
    failover's pre-ping, or an in-memory SQLite) each read takes a pooled connection of
    ``engine``, in a transaction of its own.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._kept_engine: Engine | None = None
        self._local = threading.local()
        self._kept: weakref.WeakSet[_KeptConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        url = engine.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            # A connection is closed by whichever thread ends it, not always its own.
            self._kept_engine = create_engine(
                url, poolclass=NullPool, connect_args={"check_same_thread": False}
            )
            event.listen(self._kept_engine, "connect", on_read_connect)

    def first(self, statement: Executable, parameters: dict[str, Any]) -> Row | None:
        """The first row ``statement`` gives, or None."""
        if self._kept_engine is None:
            with self._engine.connect() as connection:
                return connection.execute(statement, parameters).first()
        kept = getattr(self._local, "kept", None)
        if kept is None or kept.connection.closed:
            kept = self._local.kept = self._keep_connection(self._kept_engine)
        connection = kept.connection
        try:
            return connection.execute(statement, parameters).first()
        finally:
            connection.rollback()  # SQLAlchemy's own bookkeeping: no BEGIN was sent

    def _keep_connection(self, engine: Engine) -> "_KeptConnection":
        kept = _KeptConnection(engine.connect())
        with self._lock:
            self._kept.add(kept)
        return kept

    def dispose(self) -> None:
        """Close the connections threads keep; a thread's next read opens a new one."""
        with self._lock:
            kept = list(self._kept)
        for each in kept:
            each.close()


class _KeptConnection:
    """A thread's kept connection. Only the thread's locals hold this, so it is collected,
    and the connection closed, when the thread ends."""

    __slots__ = ("connection", "close", "__weakref__")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.close = weakref.finalize(self, connection.close)


def page_with_total(
    session: Session | scoped_session[Session],
    query: Select[Any],
    *,
    order_by: tuple[Any, ...],
    limit: int,
    offset: int,
) -> tuple[list[Any], int]:
    """A page of ``query``'s entities and the number of all its rows, in one statement.

    One statement reads one snapshot. With a COUNT and a SELECT one after the other, under
    PostgreSQL's READ COMMITTED a commit landing between them made the total disagree with
    the page (seen: ``total: 0`` beside one event).
    """
    counted = query.add_columns(func.count().over().label("total"))
    rows = session.execute(counted.order_by(*order_by).limit(limit).offset(offset)).all()
    if rows:
        return [row[0] for row in rows], rows[0].total
    if offset == 0:
        return [], 0
    return [], session.scalar(select(func.count()).select_from(query.subquery())) or 0

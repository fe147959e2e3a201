"""Reads: single statements outside any transaction (``SingleReads``), and paged queries."""

import threading
import weakref
from collections import namedtuple
from typing import Any

from sqlalchemy import BindParameter
from sqlalchemy import Executable
from sqlalchemy import Row
from sqlalchemy import Select
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session
from sqlalchemy.pool import NullPool

from provisioner.store.sqlite import on_read_connect

#: How many statements a ``SingleReads`` keeps prepared (its callers' module constants).
PREPARED_LIMIT = 64


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

    On the kept connections a statement runs as a ``PreparedRead``, straight on the
    driver: SQLAlchemy's execution (its context, result object and bookkeeping) cost three
    times the query itself, a tenth of a boot. While anyone listens to SQLAlchemy's
    ``before_cursor_execute`` (a test watching every statement), and after an error from
    the driver, the read goes through SQLAlchemy, which raises its own errors.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._kept_engine: Engine | None = None
        self._local = threading.local()
        self._kept: weakref.WeakSet[_KeptConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._prepared: dict[Executable, PreparedRead | None] = {}
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
        prepared = self._prepared.get(statement, False)
        if prepared is False:
            # Past the limit a statement is one built per call: compiling it for one read
            # would cost more than SQLAlchemy's path, whose cache knows its shape.
            prepared = None
            if len(self._prepared) < PREPARED_LIMIT:
                prepared = self._prepared[statement] = PreparedRead.of(
                    statement, connection.dialect
                )
        if prepared is not None and not self._kept_engine.dispatch.before_cursor_execute:
            try:
                return prepared.first(connection.connection.dbapi_connection, parameters)
            except connection.dialect.loaded_dbapi.Error:
                pass  # again through SQLAlchemy, which raises (or heals) it its own way
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


class PreparedRead:
    """A SELECT compiled once for a dialect: its SQL text, the order of its parameters and
    its columns' converters, run on a driver cursor. Its rows are named tuples of the
    values SQLAlchemy's rows hold (the same column types convert them), read by attribute
    or index."""

    __slots__ = ("sql", "_parameters", "_converters", "_row")

    def __init__(self, sql: str, parameters: list, converters: list, fields: list[str]) -> None:
        self.sql = sql
        #: (name, value bound in the statement or _REQUIRED, bind converter or None), in the
        #: order of the SQL's placeholders.
        self._parameters = parameters
        #: (column index, result converter), for the columns that have one.
        self._converters = converters
        self._row = namedtuple("PreparedRow", fields, rename=True)  # type: ignore[misc]

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> "PreparedRead | None":
        """``statement`` prepared for ``dialect``, or None where its SQL is only known at
        execution (expanding ``IN``, literal parameters) or is not a positional SELECT."""
        if not isinstance(statement, Select):
            return None
        compiled = statement.compile(dialect=dialect)
        if (
            not compiled.positional
            or compiled.literal_execute_params
            or compiled.post_compile_params
        ):
            return None
        parameters = [
            (name, _literal(compiled.binds[name]), _bind_converter(compiled.binds[name], dialect))
            for name in compiled.positiontup or ()
        ]
        columns = list(statement.selected_columns)
        converters = [
            (index, converter)
            for index, column in enumerate(columns)
            if (converter := column.type.dialect_impl(dialect).result_processor(dialect, None))
        ]
        fields = [column.key or f"_{index}" for index, column in enumerate(columns)]
        return cls(compiled.string, parameters, converters, fields)

    def first(self, driver_connection: Any, values: dict[str, Any]) -> Any:
        """The first row of the statement run with ``values`` on ``driver_connection``, or
        None. The cursor is closed, as SQLAlchemy's ``first()`` does: no statement is left
        holding a snapshot."""
        cursor = driver_connection.cursor()
        try:
            cursor.execute(self.sql, self._arguments(values))
            raw = cursor.fetchone()
        finally:
            cursor.close()
        if raw is None:
            return None
        row = list(raw)
        for index, convert in self._converters:
            row[index] = convert(row[index])
        return self._row._make(row)

    def _arguments(self, values: dict[str, Any]) -> list[Any]:
        """The values of the SQL's placeholders, in order, as the driver takes them."""
        arguments = []
        for name, literal, convert in self._parameters:
            value = values[name] if literal is _REQUIRED else values.get(name, literal)
            arguments.append(value if convert is None else convert(value))
        return arguments


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


#: A parameter whose value the caller gives.
_REQUIRED = object()


def _literal(bind: BindParameter) -> Any:
    """The value ``bind`` carries in its statement (``Node.id == "n1"``), or _REQUIRED."""
    return _REQUIRED if bind.required else bind.effective_value


def _bind_converter(bind: BindParameter, dialect: Dialect) -> Any:
    return bind.type.dialect_impl(dialect).bind_processor(dialect)

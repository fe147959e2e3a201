"""Database plumbing: the UTC column type, SQLite connection set-up and write transactions.

SQLite allows one writer at a time. Writers that merely wait on ``busy_timeout`` are served
unfairly (p99 in seconds under load) and a deferred transaction that reads before it writes
can fail outright with ``database is locked`` when another connection commits in between.
So every write transaction on SQLite takes an in-process lock first and starts with
``BEGIN IMMEDIATE``; other processes sharing the file still queue on the busy timeout.
PostgreSQL needs neither: row locks (``SELECT ... FOR UPDATE``) and guarded updates do it.
"""

import collections
import functools
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import JSON
from sqlalchemy import DateTime
from sqlalchemy import Executable
from sqlalchemy import Insert
from sqlalchemy import Integer
from sqlalchemy import Row
from sqlalchemy import Select
from sqlalchemy import Table
from sqlalchemy import bindparam
from sqlalchemy import column
from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

from provisioner.timeutil import as_utc

SQLITE_BUSY_TIMEOUT_MS = 5000
#: ``PRAGMA synchronous`` values offered by ``SQLITE_SYNCHRONOUS`` (docs/deploy.md).
SQLITE_SYNCHRONOUS = ("normal", "full")
#: SQLite's primary result code "database or disk is full", and PostgreSQL's disk_full class.
SQLITE_FULL = 13
DISK_FULL_SQLSTATE = "53100"


class FairLock:
    """A lock granted in the order it was asked for.

    ``threading.Lock`` lets the thread that releases it take it straight back, before any
    waiter wakes up: the group-commit writer, which takes it batch after batch, could keep
    a boot's write or the sweeper waiting for as long as reports keep coming. Here
    ``release`` hands the lock to the longest waiter.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: collections.deque[threading.Lock] = collections.deque()
        self._locked = False

    def acquire(self) -> None:
        with self._mutex:
            if not self._locked:
                self._locked = True
                return
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        turn.acquire()  # released by the holder handing the lock over

    def release(self) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()  # still locked: now the waiter's
            else:
                self._locked = False

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_sqlite_write_lock = FairLock()
_begin = threading.local()  # .statement: how this thread's next transaction begins


@contextmanager
def _beginning_with(statement: str) -> Iterator[None]:
    """Let transactions this thread begins in the block begin with ``statement`` instead
    of a plain BEGIN."""
    previous = getattr(_begin, "statement", "BEGIN")
    _begin.statement = statement
    try:
        yield
    finally:
        _begin.statement = previous


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text, which sorts and compares
    correctly because every value is UTC. Naive values are refused on the way in so a local
    time can never slip into the database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use timeutil.utcnow()")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def configure_engine(engine: Engine, synchronous: str = "normal") -> None:
    """Set SQLite pragmas once per connection (``synchronous``: ``SQLITE_SYNCHRONOUS``) and
    choose how transactions begin: BEGIN, or BEGIN IMMEDIATE in a ``write_transaction``.

    SQLAlchemy's recipe for the second takes BEGIN away from the sqlite3 driver and emits
    it from a ``begin`` event. But an engine with any connection event makes every
    statement on every connection dispatch events: on a boot's one-row read that was a
    quarter of its cost. The dialect's ``do_begin`` is where a driver's transaction
    begins, so BEGIN is emitted there instead, on the DB-API connection.
    """
    if engine.dialect.name != "sqlite":
        return
    if synchronous not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {SQLITE_SYNCHRONOUS}, not {synchronous!r}")
    event.listen(engine, "connect", functools.partial(_on_sqlite_connect, synchronous))
    engine.dialect.do_begin = _sqlite_begin  # type: ignore[method-assign]


def _on_sqlite_connect(synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    # The driver never BEGINs: _sqlite_begin does on the app's engine, nothing on the one
    # SingleReads keeps its connections on.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts the file, but a power cut (not a crash of the
    # process) can undo the last commits before a checkpoint; FULL syncs every commit.
    cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
    cursor.close()


def _sqlite_begin(dbapi_connection: Any) -> None:
    dbapi_connection.execute(getattr(_begin, "statement", "BEGIN"))


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
            # Reads only: how commits are synced does not matter on these connections.
            event.listen(
                self._kept_engine, "connect", functools.partial(_on_sqlite_connect, "normal")
            )

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


#: Keys of PostgreSQL advisory locks (arbitrary, fixed numbers).
EVENT_ORDER_LOCK = 7_260_001
RETENTION_LOCK = 7_260_002
MIGRATION_LOCK = 7_260_003


def order_event_ids(session: Session) -> None:
    """Make event ids follow commit order, so the event stream's cursor never skips one.

    A PostgreSQL sequence hands out ids at INSERT, and transactions may commit in another
    order: a follower could read id 11 before id 10 commits, then never see 10. Holding
    a transaction-level advisory lock from before the event's INSERT until commit makes
    concurrent event writers commit in id order. SQLite has one writer already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})


@contextmanager
def exclusive_job(session: Session | scoped_session[Session], key: int) -> Iterator[bool]:
    """Yield whether this instance may run the job ``key`` now (one instance at a time).

    On PostgreSQL a session-level advisory lock is held on a connection of its own for the
    duration, so the job's own transactions may commit as they go. SQLite serves a single
    host, where the scheduler's ``max_instances=1`` already suffices.
    """
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()


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


#: ``session.info`` key of the transaction's ``DeferredWrites``, while ``deferring_writes``.
DEFERRED_WRITES = "provisioner.deferred_writes"


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
def deferring_writes(session: Session) -> Iterator[None]:
    """Hold back ``defer_write`` statements in the block and send them at its end."""
    writes = session.info[DEFERRED_WRITES] = DeferredWrites()
    try:
        yield
        writes.flush(session)
    finally:
        del session.info[DEFERRED_WRITES]


def defer_write(session: Session, statement: Executable, row: dict[str, Any], key: str) -> None:
    """Execute ``statement`` with ``row`` now, or at the end of ``deferring_writes``."""
    writes = session.info.get(DEFERRED_WRITES)
    if writes is None:
        session.connection().execute(statement, row)
    else:
        writes.add(statement, row, key)


def settle_writes(session: Session, key: str | None = None) -> None:
    """Send the held-back writes about ``key`` (all of them if None) before a read."""
    writes = session.info.get(DEFERRED_WRITES)
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


def is_sqlite(session: Session) -> bool:
    """Tell whether ``session`` talks to SQLite."""
    return session.get_bind().dialect.name == "sqlite"


def is_storage_full(error: BaseException) -> bool:
    """Tell whether ``error`` (SQLAlchemy's or the driver's) says the database has no room
    left: SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE 53100 (disk_full)."""
    cause = getattr(error, "orig", None) or error
    code = getattr(cause, "sqlite_errorcode", None)
    return getattr(cause, "sqlstate", None) == DISK_FULL_SQLSTATE or (
        isinstance(code, int) and code & 0xFF == SQLITE_FULL
    )


#: Engines whose last write transaction failed for lack of storage (``storage_full``).
_full_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def storage_full(session: Session | scoped_session[Session]) -> bool:
    """Tell whether the last write transaction on ``session``'s database, in this process,
    failed for lack of storage."""
    return session.get_bind() in _full_engines


#: Writes that change nothing but need room: a SQLite commit appends a page to the WAL; a
#: PostgreSQL temporary table is a new file in the database's tablespace.
_PROBES = {
    "sqlite": ("UPDATE alembic_version SET version_num = version_num",),
    "postgresql": (
        "CREATE TEMPORARY TABLE provisioner_probe (filler text) ON COMMIT DROP",
        "INSERT INTO provisioner_probe VALUES (repeat('x', 100))",
    ),
}


def probe_write(session: Session | scoped_session[Session]) -> bool:
    """Commit a write that changes nothing; tell whether the database had room for it."""
    try:
        with write_transaction(session) as transaction:
            for statement in _PROBES[transaction.get_bind().dialect.name]:
                transaction.execute(text(statement))
    except Exception as error:
        if is_storage_full(error):
            return False
        raise
    return True


@contextmanager
def write_transaction(session: Session | scoped_session[Session]) -> Iterator[Session]:
    """Run the block as one write transaction: committed at the end, rolled back on error.

    Whether it failed for lack of storage is remembered for ``storage_full`` (``/health``).
    """
    if isinstance(session, scoped_session):
        session = session()
    if session.in_transaction():
        # End the read transaction a view may have opened; a write must start fresh.
        session.commit()
    engine = session.get_bind()
    try:
        with _write_transaction(session):
            yield session
    except Exception as error:
        if is_storage_full(error):
            _full_engines.add(engine)
        raise
    _full_engines.discard(engine)


@contextmanager
def _write_transaction(session: Session) -> Iterator[None]:
    if not is_sqlite(session):
        with session.begin():
            yield
        return
    with _sqlite_write_lock, _beginning_with("BEGIN IMMEDIATE"), session.begin():
        yield

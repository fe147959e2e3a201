"""SQLite connections: pragmas, how transactions begin, and the fair in-process write lock.

SQLite allows one writer at a time. Writers that merely wait on ``busy_timeout`` are served
unfairly (p99 in seconds under load) and a deferred transaction that reads before it writes
can fail outright with ``database is locked`` when another connection commits in between.
So every write transaction on SQLite takes an in-process lock first (``FairLock``) and
starts with ``BEGIN IMMEDIATE`` (``writing``); other processes sharing the file still queue
on the busy timeout. PostgreSQL needs neither: row locks (``SELECT ... FOR UPDATE``) and
guarded updates do it.
"""

import collections
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 5000
#: ``PRAGMA synchronous`` values offered by ``SQLITE_SYNCHRONOUS`` (docs/deploy.md).
SQLITE_SYNCHRONOUS = ("normal", "full")


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


@contextmanager
def writing(session: Session) -> Iterator[None]:
    """Run the block as the process's one SQLite write transaction: wait for the fair lock,
    then begin with ``BEGIN IMMEDIATE`` (the file's write lock, taken before any read)."""
    with _sqlite_write_lock, _beginning_with("BEGIN IMMEDIATE"), session.begin():
        yield


def configure_engine(engine: Engine, synchronous: str = "normal") -> None:
    """Set SQLite pragmas once per connection (``synchronous``: ``SQLITE_SYNCHRONOUS``) and
    take over how transactions begin: BEGIN, or BEGIN IMMEDIATE inside ``writing``.

    Why ``do_begin`` is overridden. Python's ``sqlite3`` driver begins transactions on its
    own, lazily, just before the first INSERT/UPDATE/DELETE, and never before a SELECT. Left
    to it, a transaction that reads then writes is two things: its reads see no snapshot
    (each SELECT runs in autocommit), and its first write asks for the write lock only then,
    so it fails with ``database is locked`` if another connection committed since its read,
    and a write transaction can never start with ``BEGIN IMMEDIATE``. So the driver is told
    never to begin (``isolation_level = None`` in ``_on_sqlite_connect``) and SQLAlchemy's
    dialect hook ``do_begin``, called where a driver transaction starts, sends the BEGIN
    itself: a plain ``BEGIN`` for reads, ``BEGIN IMMEDIATE`` when the thread is inside
    ``writing``.

    SQLAlchemy's documented recipe does the same from a ``begin`` event. But an engine with
    any connection event makes every statement on every connection dispatch events: on a
    boot's one-row read that was a quarter of its cost. Overriding ``do_begin`` on this
    engine's dialect costs nothing per statement.
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


def on_read_connect(dbapi_connection: Any, record: Any) -> None:
    """Set up a connection that only reads (``reads.SingleReads``): same pragmas, and the
    driver never begins; how commits are synced does not matter on it."""
    _on_sqlite_connect("normal", dbapi_connection, record)


def _sqlite_begin(dbapi_connection: Any) -> None:
    dbapi_connection.execute(getattr(_begin, "statement", "BEGIN"))


def is_sqlite(session: Session) -> bool:
    """Tell whether ``session`` talks to SQLite."""
    return session.get_bind().dialect.name == "sqlite"

"""Write transactions (``write_transaction``) and telling a full disk from other errors."""

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.store import sqlite

#: SQLite's primary result code "database or disk is full", and PostgreSQL's disk_full class.
SQLITE_FULL = 13
DISK_FULL_SQLSTATE = "53100"


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

    On SQLite it is the process's one writer (``sqlite.writing``); on PostgreSQL a plain
    transaction, row locks and guarded updates keeping writers apart. Whether it failed for
    lack of storage is remembered for ``storage_full`` (``/health``).
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
    if not sqlite.is_sqlite(session):
        with session.begin():
            yield
        return
    with sqlite.writing(session):
        yield

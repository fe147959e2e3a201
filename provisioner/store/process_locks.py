"""Locks between processes sharing one database: for migrations, and the scheduler's lease.

Several server processes may share a database: ``serve --workers N``, ``gunicorn -w N``,
instances behind a load balancer. They must not migrate at the same time, and only one of
them should run the scheduled jobs. PostgreSQL has advisory locks for both; processes
sharing an SQLite file share its directory, so there a lock file beside the database,
held with ``flock``, does it (the kernel drops it when its holder dies).
"""

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.engine import Connection
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

#: PostgreSQL advisory lock key of the scheduler's lease (see postgres.py for the others).
SCHEDULER_LOCK = 7_260_004


def sqlite_lock_path(url: URL, name: str) -> Path | None:
    """The lock file ``<database>.<name>-lock`` of an SQLite file; None for other databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    path = Path(database)
    return path.with_name(f"{path.name}.{name}-lock")


def _open_lock_file(path: Path) -> IO[str]:
    # Mode 0600 like the database; "a" creates it without truncating another's.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(descriptor, "a")


@contextmanager
def sqlite_file_lock(url: URL, name: str) -> Iterator[None]:
    """Hold the SQLite database's ``name`` lock file, waiting for it (no-op otherwise)."""
    path = sqlite_lock_path(url, name)
    if path is None:
        yield
        return
    with _open_lock_file(path) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SchedulerLease:
    """Whether this process runs the scheduled jobs: one process per database does.

    Every process starts its scheduler; each job asks ``held()`` first, which takes the
    lease when it is free (its holder stopped or died), so a stand-by takes over within one
    job interval. PostgreSQL: a session advisory lock on a connection kept for it, checked
    with ``SELECT 1`` each time (a lost connection has lost the lock too). SQLite: ``flock``
    on ``<database>.scheduler-lock``; an in-memory database has one process anyway.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._guard = threading.Lock()  # jobs run in several scheduler threads
        self._file: IO[str] | None = None
        self._connection: Connection | None = None
        self._free = sqlite_lock_path(engine.url, "scheduler") is None and (
            engine.dialect.name != "postgresql"
        )
        self._was_held: bool | None = None

    def held(self) -> bool:
        """Take the lease if it is free; whether this process holds it now.

        Raises the driver's error when PostgreSQL cannot be reached: whether another
        process holds the lease is then unknown, and the job reports the outage itself.
        """
        with self._guard:
            if self._free:
                return True
            if self._engine.dialect.name == "postgresql":
                held = self._hold_postgres()
            else:
                held = self._hold_sqlite()
            self._log(held)
            return held

    def release(self) -> None:
        """Give the lease up (when the scheduler stops)."""
        with self._guard:
            if self._file is not None:
                self._file.close()  # closing the descriptor drops the flock
                self._file = None
            if self._connection is not None:
                try:
                    self._connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULER_LOCK}
                    )
                    self._connection.commit()
                    self._connection.close()
                except DBAPIError:
                    self._connection.invalidate()
                self._connection = None

    def _hold_sqlite(self) -> bool:
        if self._file is not None:
            return True
        path = sqlite_lock_path(self._engine.url, "scheduler")
        assert path is not None
        handle = _open_lock_file(path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def _hold_postgres(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()
                return True
            except DBAPIError:
                self._connection.invalidate()  # never back to the pool: it held the lock
                self._connection.close()
                self._connection = None
        connection = self._engine.connect()  # unreachable: raise, see held()
        try:
            acquired = connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK}
            )
            connection.commit()
        except DBAPIError:
            connection.invalidate()
            connection.close()
            return False
        if not acquired:
            connection.close()
            return False
        self._connection = connection
        return True

    def _log(self, held: bool) -> None:
        """Say so when this process becomes the one running the jobs, or stops being it."""
        if held == self._was_held:
            return
        self._was_held = held
        if held:
            log.info("scheduler: this process (pid %d) runs the scheduled jobs", os.getpid())
        else:
            log.info(
                "scheduler: another process runs the scheduled jobs for this database; "
                "pid %d stands by",
                os.getpid(),
            )

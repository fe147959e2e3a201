"""How transactions begin on SQLite: the server, not the sqlite3 driver, emits BEGIN.

The driver's legacy mode begins a transaction only before a write, so a session's reads
would not share a snapshot and a read-then-write transaction could fail with "database is
locked". ``database.configure_engine`` takes BEGIN over: a session begins with BEGIN and
a ``write_transaction`` with BEGIN IMMEDIATE. ``database.SingleReads`` reads outside any
transaction, on a connection each thread keeps.
"""

import os
import sqlite3
import threading

import pytest
from sqlalchemy import select
from sqlalchemy import text

from provisioner.extensions import db
from provisioner.models import Node
from provisioner.serve import close_database
from provisioner.store.transactions import write_transaction
from provisioner.web.context import single_reads

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


@pytest.fixture
def database(app) -> str:
    """The path of the app's SQLite file, holding one node."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO nodes (id, mac_address, hostname, state, install_attempts,"
                " install_timeouts, created_at, updated_at, state_changed_at)"
                " VALUES ('n1', '52:54:00:00:00:01', 'before', 'discovered', 0, 0,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        db.session.commit()
        return db.engine.url.database


def rename(database: str, hostname: str) -> None:
    """Commit a change from another connection, as another process would."""
    other = sqlite3.connect(database, timeout=0)
    with other:
        other.execute("UPDATE nodes SET hostname = ? WHERE id = 'n1'", (hostname,))
    other.close()


def test_a_sessions_reads_share_one_snapshot(app, database):
    """A commit landing between two reads of one session is not seen by the second: the
    session began a transaction before its first read."""
    with app.app_context():
        first = db.session.scalar(select(Node.hostname))
        rename(database, "after")
        second = db.session.scalar(select(Node.hostname).execution_options(populate_existing=True))
        assert (first, second) == ("before", "before")
        db.session.commit()
        assert db.session.scalar(select(Node.hostname)) == "after"


def test_a_write_transaction_holds_the_write_lock_before_it_writes(app, database):
    """BEGIN IMMEDIATE: from its start, no other connection can write, so the transaction's
    own first write can never find the database locked after it has read."""
    with app.app_context(), write_transaction(db.session) as session:
        session.scalar(select(Node.hostname))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            rename(database, "other")
    with app.app_context():
        rename(database, "free again")


def test_a_kept_read_connection_sees_every_commit(app, database):
    """The connection a thread keeps for single reads is never left inside a transaction:
    each read sees the latest commit, as a fresh connection would."""
    reads = single_reads(app)
    by_id = select(Node.hostname).where(Node.id == "n1")
    assert reads.first(by_id, {}).hostname == "before"
    rename(database, "after")
    assert reads.first(by_id, {}).hostname == "after"


def open_files_on(database: str) -> int:
    """How many file descriptors of this process point at ``database``."""
    descriptors = os.listdir("/proc/self/fd")
    return sum(1 for fd in descriptors if _target(f"/proc/self/fd/{fd}") == database)


def _target(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def test_a_thread_keeps_one_connection_while_it_lives(app, database):
    """Reads of one thread share a connection, and a thread that ends closes it.

    The app's pool is closed first: SQLite defers closing a file while another connection
    of the process holds a lock on it, so only with no other connection open does the
    count of open files show each close."""
    reads = single_reads(app)
    by_id = select(Node.hostname).where(Node.id == "n1")
    with app.app_context():
        db.engine.dispose()
    assert open_files_on(database) == 0
    done_reading = threading.Barrier(4)
    may_end = threading.Event()

    def read_twice_then_wait() -> None:
        reads.first(by_id, {})
        reads.first(by_id, {})
        done_reading.wait()
        may_end.wait()

    threads = [threading.Thread(target=read_twice_then_wait) for _ in range(3)]
    for thread in threads:
        thread.start()
    done_reading.wait()
    assert open_files_on(database) == 3
    may_end.set()
    for thread in threads:
        thread.join()
    assert open_files_on(database) == 0


def test_closing_the_database_closes_the_kept_connections(app, database):
    """``close_database`` closes the connection a living thread keeps, with the pool; the
    thread's next read opens a new one."""
    reads = single_reads(app)
    by_id = select(Node.hostname).where(Node.id == "n1")
    assert reads.first(by_id, {}).hostname == "before"
    close_database(app)
    assert open_files_on(database) == 0
    assert reads.first(by_id, {}).hostname == "before"

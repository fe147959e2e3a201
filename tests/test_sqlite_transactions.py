"""How transactions begin on SQLite: the server, not the sqlite3 driver, emits BEGIN.

The driver's legacy mode begins a transaction only before a write, so a session's reads
would not share a snapshot and a read-then-write transaction could fail with "database is
locked". ``database.configure_engine`` takes BEGIN over: a session begins with BEGIN, a
``write_transaction`` with BEGIN IMMEDIATE, and a ``single_read`` with none.
"""

import sqlite3

import pytest
from sqlalchemy import select
from sqlalchemy import text

from provisioner.database import single_read
from provisioner.database import write_transaction
from provisioner.extensions import db
from provisioner.models import Node

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


def test_a_single_read_opens_no_transaction(app, database):
    """One statement is its own snapshot; a BEGIN would only cost a round trip."""
    with app.app_context(), single_read(db.engine) as connection:
        assert connection.scalar(select(Node.hostname)) == "before"
        assert not connection.connection.dbapi_connection.in_transaction
    with app.app_context():
        db.session.scalar(select(Node.hostname))
        assert db.session.connection().connection.dbapi_connection.in_transaction
        db.session.rollback()

"""The database: migrations without drift, SQLite pragmas, cascades and UTC timestamps."""

import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from provisioner.database import write_transaction
from provisioner.extensions import db
from provisioner.lifecycle import State
from provisioner.lifecycle import Trigger
from provisioner.lifecycle import transition
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import NodeTag
from provisioner.timeutil import utcnow

PROVISIONER_SCRIPT = Path(sys.executable).with_name("provisioner")


def run_db_command(tmp_path: Path, database: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``provisioner db ...`` against ``database`` with no other settings."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    environ["PROVISIONER_DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(
        [str(PROVISIONER_SCRIPT), "db", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def table_names(database: Path) -> set[str]:
    """The tables in a SQLite file (SQLite's own ``sqlite_*`` aside), read with the driver."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' "
            "ESCAPE '!'"
        )
        return {name for (name,) in rows}


def test_upgrade_on_empty_file_then_check_shows_no_drift(tmp_path):
    """``db upgrade`` builds the schema; ``db check`` then finds nothing to migrate."""
    database = tmp_path / "fresh.db"
    upgrade = run_db_command(tmp_path, database, "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    assert {"nodes", "node_tags", "node_state_logs", "alembic_version"} <= table_names(database)
    check = run_db_command(tmp_path, database, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_check_on_an_empty_file_reports_drift(tmp_path):
    """``db check`` does fail when the schema is missing, so the test above means something."""
    database = tmp_path / "empty.db"
    run_db_command(tmp_path, database, "upgrade")
    downgrade = run_db_command(tmp_path, database, "downgrade", "base")
    assert downgrade.returncode == 0, downgrade.stderr
    assert table_names(database) <= {"alembic_version"}
    check = run_db_command(tmp_path, database, "check")
    assert check.returncode != 0


def test_upgrade_is_repeatable(tmp_path):
    """Running ``db upgrade`` on an up-to-date database changes nothing and succeeds."""
    database = tmp_path / "twice.db"
    assert run_db_command(tmp_path, database, "upgrade").returncode == 0
    again = run_db_command(tmp_path, database, "upgrade")
    assert again.returncode == 0, again.stderr


# -- SQLite connection settings -----------------------------------------------------------


def test_sqlite_pragmas_are_set_on_every_connection(app):
    """Foreign keys on, WAL journal and a busy timeout, on a newly opened connection."""
    with app.app_context():
        db.engine.dispose()
        with db.engine.connect() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA journal_mode")).scalar().lower() == "wal"
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() > 0


def add_node_with_history(now) -> str:
    """A node with two tags and two state log rows; return its id."""
    with write_transaction(db.session):
        node = Node(
            mac_address="52:54:00:00:00:01",
            state=State.DISCOVERED,
            install_attempts=0,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
        )
        node.tag_rows = [NodeTag(tag="rack1"), NodeTag(tag="gpu")]
        db.session.add(node)
        db.session.flush()
        db.session.add(
            NodeStateLog(
                node_id=node.id,
                from_state=None,
                to_state=State.DISCOVERED,
                triggered_by=Trigger.ADMIN,
                created_at=now,
            )
        )
        transition(db.session, node, State.PENDING, triggered_by=Trigger.ADMIN, now=now)
    return node.id


def child_rows(node_id: str) -> tuple[int, int]:
    """How many state log and tag rows point at ``node_id``."""
    logs = db.session.scalar(
        select(func.count()).select_from(NodeStateLog).where(NodeStateLog.node_id == node_id)
    )
    tags = db.session.scalar(
        select(func.count()).select_from(NodeTag).where(NodeTag.node_id == node_id)
    )
    db.session.rollback()
    return logs, tags


def test_database_cascade_removes_logs_and_tags(app, clock):
    """A plain SQL ``DELETE`` of a node removes its rows (the foreign key cascade works)."""
    with app.app_context():
        node_id = add_node_with_history(clock())
        assert child_rows(node_id) == (2, 2)
        with write_transaction(db.session):
            db.session.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": node_id})
        assert child_rows(node_id) == (0, 0)


def test_orm_delete_removes_logs_and_tags(app, clock):
    """Deleting the ``Node`` object removes its logs and tags too."""
    with app.app_context():
        node_id = add_node_with_history(clock())
        db.session.expire_all()
        with write_transaction(db.session):
            db.session.delete(db.session.get(Node, node_id))
        assert child_rows(node_id) == (0, 0)


def test_state_log_for_a_missing_node_is_refused(app, clock):
    """Foreign keys are enforced: a log row cannot point at no node."""
    with app.app_context():
        with pytest.raises(Exception, match="FOREIGN KEY"):
            with write_transaction(db.session):
                db.session.add(
                    NodeStateLog(
                        node_id="no-such-node",
                        to_state=State.DISCOVERED,
                        triggered_by=Trigger.SYSTEM,
                        created_at=clock(),
                    )
                )


# -- time ---------------------------------------------------------------------------------


def test_stored_timestamp_comes_back_aware_utc(app):
    """A stored time is read back aware, in UTC, equal to what was written."""
    written = datetime(2020, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with app.app_context():
        with write_transaction(db.session):
            node = Node(
                mac_address="52:54:00:00:00:02",
                state=State.DISCOVERED,
                created_at=written,
                updated_at=written,
                state_changed_at=written,
            )
            db.session.add(node)
        db.session.expunge_all()
        read = db.session.get(Node, node.id)
        assert read.created_at == written
        assert read.created_at.utcoffset() == timedelta(0)
        assert read.created_at.hour == 12
        assert read.last_seen_at is None
        assert utcnow() - read.created_at > timedelta(0)
        assert read.created_at < utcnow()


def test_stored_timestamp_is_naive_utc_text_in_sqlite(app):
    """On SQLite the column holds the UTC wall time, so text ordering is time ordering."""
    written = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    with app.app_context():
        with write_transaction(db.session):
            node = Node(
                mac_address="52:54:00:00:00:03",
                state=State.DISCOVERED,
                created_at=written,
                updated_at=written,
                state_changed_at=written,
            )
            db.session.add(node)
        raw = db.session.execute(
            text("SELECT created_at FROM nodes WHERE id = :id"), {"id": node.id}
        ).scalar()
        db.session.rollback()
    assert str(raw).startswith("2026-03-02 04:30:00")


def test_naive_timestamp_is_refused(app):
    """A naive datetime never reaches the database."""
    with app.app_context():
        with pytest.raises((ValueError, StatementError)):
            with write_transaction(db.session):
                db.session.add(
                    Node(
                        mac_address="52:54:00:00:00:04",
                        state=State.DISCOVERED,
                        created_at=datetime(2026, 1, 1, 12, 0),
                        updated_at=utcnow(),
                        state_changed_at=utcnow(),
                    )
                )
        assert db.session.scalar(select(func.count()).select_from(Node)) == 0


def test_column_defaults_are_aware_and_evaluated_per_row(app):
    """Rows created without explicit times get fresh aware UTC values."""
    with app.app_context():
        with write_transaction(db.session):
            first = Node(mac_address="52:54:00:00:00:05", state=State.DISCOVERED)
            db.session.add(first)
        with write_transaction(db.session):
            second = Node(mac_address="52:54:00:00:00:06", state=State.DISCOVERED)
            db.session.add(second)
        db.session.expunge_all()
        first, second = db.session.get(Node, first.id), db.session.get(Node, second.id)
        assert first.created_at.utcoffset() == timedelta(0)
        assert first.state_changed_at is not None
        assert first.install_attempts == 0
        assert second.created_at >= first.created_at
        assert abs(utcnow() - second.created_at) < timedelta(minutes=5)

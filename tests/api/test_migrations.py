"""The database: migrations without drift, SQLite pragmas, cascades and UTC timestamps."""

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from datetime import timedelta
from datetime import timezone
from pathlib import Path

import databases
import dbcheck
import pytest
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.exc import StatementError

from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import transition
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import NodeTag
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow

PROVISIONER_SCRIPT = Path(sys.executable).with_name("provisioner")
FLASK_SCRIPT = Path(sys.executable).with_name("flask")


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database without any schema: a new SQLite file, or a new PostgreSQL database.

    Not the session's scratch database, which is already migrated (and shared).
    """
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin_url, reason = databases.postgres_admin_url()
    if admin_url is None:
        pytest.skip(reason)
    url = databases.create_scratch_database(admin_url)
    try:
        yield url
    finally:
        databases.drop_database(admin_url, url)


def run_db_command(
    tmp_path: Path, database_url: str, *args: str, script: Path = PROVISIONER_SCRIPT
) -> subprocess.CompletedProcess:
    """Run ``provisioner db ...`` against ``database_url`` with no other settings.

    ``script=FLASK_SCRIPT`` runs the developers' ``flask --app provisioner db ...`` instead
    (the full Flask-Migrate command set, e.g. ``downgrade``).
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    environ["PROVISIONER_DATABASE_URL"] = database_url
    prefix = ["--app", "provisioner"] if script == FLASK_SCRIPT else []
    return subprocess.run(
        [str(script), *prefix, "db", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow  # runs `provisioner db` in subprocesses
def test_upgrade_on_empty_database_then_check_shows_no_drift(tmp_path, empty_database_url):
    """``db upgrade`` builds the schema; ``db check`` then finds nothing to migrate."""
    url = empty_database_url
    upgrade = run_db_command(tmp_path, url, "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    tables = {"nodes", "node_tags", "node_state_logs", "node_events", "alembic_version"}
    assert tables <= dbcheck.table_names(url)
    check = run_db_command(tmp_path, url, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


@pytest.mark.slow  # runs `provisioner db` in subprocesses
def test_check_on_an_empty_database_reports_drift(tmp_path, empty_database_url):
    """``db check`` does fail when the schema is missing, so the test above means something."""
    url = empty_database_url
    run_db_command(tmp_path, url, "upgrade")
    downgrade = run_db_command(tmp_path, url, "downgrade", "base", script=FLASK_SCRIPT)
    assert downgrade.returncode == 0, downgrade.stderr
    assert dbcheck.table_names(url) <= {"alembic_version"}
    check = run_db_command(tmp_path, url, "check")
    assert check.returncode != 0


@pytest.mark.slow  # runs `provisioner db` in subprocesses
def test_upgrade_is_repeatable(tmp_path, empty_database_url):
    """Running ``db upgrade`` on an up-to-date database changes nothing and succeeds."""
    url = empty_database_url
    assert run_db_command(tmp_path, url, "upgrade").returncode == 0
    again = run_db_command(tmp_path, url, "upgrade")
    assert again.returncode == 0, again.stderr


# -- SQLite connection settings -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_pragmas_are_set_on_every_connection(app):
    """Foreign keys on, WAL journal and a busy timeout, on a newly opened connection.

    SQLite only: PRAGMAs are SQLite's; PostgreSQL enforces foreign keys and has no such knobs.
    """
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
        with pytest.raises(IntegrityError, match="(?i)foreign key"):
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


@pytest.mark.parametrize("backend", ["sqlite"])
def test_stored_timestamp_is_naive_utc_text_in_sqlite(app):
    """On SQLite the column holds the UTC wall time, so text ordering is time ordering.

    SQLite only: it is about SQLite's storage format; PostgreSQL's is the test below.
    """
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


@pytest.mark.parametrize("backend", ["postgresql"])
def test_stored_timestamp_is_timestamptz_in_postgresql(app):
    """On PostgreSQL the column holds the instant; it reads back UTC in any session time zone.

    PostgreSQL only: the counterpart of the SQLite storage test above.
    """
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
        db.session.expunge_all()
        db.session.execute(text("SET TIME ZONE 'Asia/Tokyo'"))  # undone by the rollback
        column_type = db.session.scalar(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'nodes' AND column_name = 'created_at'"
            )
        )
        utc_wall_time = db.session.scalar(
            text("SELECT created_at AT TIME ZONE 'UTC' FROM nodes WHERE id = :id"), {"id": node.id}
        )
        read = db.session.get(Node, node.id).created_at
        db.session.rollback()
    assert column_type == "timestamp with time zone"
    assert utc_wall_time == datetime(2026, 3, 2, 4, 30)
    assert read == written
    assert read.utcoffset() == timedelta(0)


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


@pytest.mark.slow  # runs `provisioner db` in subprocesses
def test_concurrent_upgrades_of_an_empty_database_all_succeed(tmp_path, empty_database_url):
    """Four ``db upgrade`` at once (workers starting together) take turns: all succeed.

    On a new SQLite file they raced to "database is locked" before the lock file.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    environ["PROVISIONER_DATABASE_URL"] = empty_database_url
    upgrades = [
        subprocess.Popen(
            [str(PROVISIONER_SCRIPT), "db", "upgrade"],
            cwd=tmp_path,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [upgrade.communicate(timeout=120)[0] for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0] * 4, outputs
    check = run_db_command(tmp_path, empty_database_url, "check")
    assert check.returncode == 0, check.stdout + check.stderr

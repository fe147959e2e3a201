"""The test databases: a fresh SQLite file per test, and a scratch PostgreSQL database.

PostgreSQL is used when ``PROVISIONER_TEST_POSTGRES_URL`` names a server (an admin URL such
as ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) or one answers on
127.0.0.1:5432 as ``postgres`` with trust auth. One scratch database is created per test
session, migrated once, emptied before each test and dropped at the end.
"""

import os
import socket
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ENV_URL = "PROVISIONER_TEST_POSTGRES_URL"
ADMIN_URL = os.environ.get(ENV_URL, "")


def postgres_admin_url() -> tuple[str | None, str]:
    """The admin URL to use, or None and the reason PostgreSQL tests must skip."""
    url = ADMIN_URL or DEFAULT_ADMIN_URL
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 1):
            pass
    except OSError as exc:
        where = ENV_URL if ADMIN_URL else "127.0.0.1:5432"
        return None, f"PostgreSQL not reachable at {where} ({exc.strerror}); set {ENV_URL}"
    try:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        return None, f"PostgreSQL at {parsed.host}:{parsed.port} refused us: {exc.orig}"
    return url, ""


def create_scratch_database(admin_url: str) -> str:
    """Create an empty database for this test session; return its URL."""
    name = f"provisioner_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop a scratch database, disconnecting anyone still on it."""
    name = make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    " AND tablename <> 'alembic_version'"
)


def empty_database(url: str) -> None:
    """Delete every row of every table (the migration version stays), resetting sequences."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        tables = [f'"{name}"' for name in connection.scalars(sa.text(_TABLES))]
        if tables:
            connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


def migration_head(directory: str) -> str | None:
    """The newest revision in the migrations ``directory``."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", directory)
    return ScriptDirectory.from_config(config).get_current_head()


def migrated_revision(url: str) -> str | None:
    """The revision the database at ``url`` is migrated to, or ``None`` (no version table)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy a SQLite database file with SQLite's backup API (safe whatever its journal)."""
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)

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
    if url in _engines:
        _engines.pop(url).dispose()
    name = make_url(url).database
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    " AND tablename <> 'alembic_version' ORDER BY tablename"
)
_RESET_SEQUENCES = (
    "SELECT setval(oid, 1, false) FROM pg_class"
    " WHERE relkind = 'S' AND relnamespace = current_schema()::regnamespace"
)
#: One pooled engine per scratch database, kept for the session: connecting per test cost
#: more client CPU than emptying the database.
_engines: dict[str, sa.Engine] = {}


def _engine(url: str) -> sa.Engine:
    if url not in _engines:
        _engines[url] = sa.create_engine(url, pool_size=1, max_overflow=0)
    return _engines[url]


def empty_database(url: str) -> str | None:
    """Delete every row of every table (the migration version stays), reset the sequences,
    and return the revision the database is at (``None``: never migrated).

    Only tables holding rows are truncated: TRUNCATE gives each table new files, which cost
    the server far more than looking (most tests write to two or three tables).
    """
    with _engine(url).begin() as connection:
        tables = list(connection.scalars(sa.text(_TABLES)))
        if tables:
            probe = " UNION ALL ".join(
                f"SELECT '{name}' FROM (SELECT 1 FROM \"{name}\" LIMIT 1) AS probe"
                for name in tables
            )
            holding = [f'"{name}"' for name in connection.scalars(sa.text(probe))]
            if holding:
                connection.execute(sa.text(f"TRUNCATE {', '.join(holding)} CASCADE"))
        connection.execute(sa.text(_RESET_SEQUENCES))
        if "alembic_version" not in connection.scalars(sa.text(_VERSION_TABLE)).all():
            return None
        return connection.scalar(sa.text("SELECT version_num FROM alembic_version"))


_VERSION_TABLE = (
    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    " AND tablename = 'alembic_version'"
)


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

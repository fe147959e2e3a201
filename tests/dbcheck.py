"""Read a test database directly, the same way on SQLite and PostgreSQL.

Tests use these to check what was (or was not) written, beside what the API shows. Each call
opens its own connection (no pool, nothing left open), so it sees only committed rows and
works as well on an app's database as on the one a stopped server leaves behind::

    assert dbcheck.count_rows(app.config["SQLALCHEMY_DATABASE_URI"], "node_events") == 0
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool


@contextmanager
def connect(url: str) -> Iterator[sa.Connection]:
    """A connection of its own to the database at ``url``, closed (and disposed) afterwards."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params: Any) -> list[tuple]:
    """The rows ``sql`` returns, as plain tuples."""
    with connect(url) as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def count_rows(url: str, table: str) -> int:
    """How many rows ``table`` holds."""
    with connect(url) as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(sa.table(table)))


def table_names(url: str) -> set[str]:
    """The tables in the database (SQLite's own ``sqlite_*`` aside)."""
    with connect(url) as connection:
        return set(sa.inspect(connection).get_table_names())

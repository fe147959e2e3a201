"""PostgreSQL advisory locks: event ids in commit order, and one instance per job.

On SQLite both are no-ops: one host, one writer at a time (``sqlite.writing``).
"""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

#: Keys of PostgreSQL advisory locks (arbitrary, fixed numbers).
EVENT_ORDER_LOCK = 7_260_001
RETENTION_LOCK = 7_260_002
MIGRATION_LOCK = 7_260_003


def order_event_ids(session: Session) -> None:
    """Make event ids follow commit order, so the event stream's cursor never skips one.

    A PostgreSQL sequence hands out ids at INSERT, and transactions may commit in another
    order: a follower could read id 11 before id 10 commits, then never see 10. Holding
    a transaction-level advisory lock from before the event's INSERT until commit makes
    concurrent event writers commit in id order. SQLite has one writer already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_ORDER_LOCK})


@contextmanager
def exclusive_job(session: Session | scoped_session[Session], key: int) -> Iterator[bool]:
    """Yield whether this instance may run the job ``key`` now (one instance at a time).

    On PostgreSQL a session-level advisory lock is held on a connection of its own for the
    duration, so the job's own transactions may commit as they go. SQLite serves a single
    host, where the scheduler's ``max_instances=1`` already suffices.
    """
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as connection:
        acquired = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        connection.commit()
        try:
            yield acquired
        finally:
            if acquired:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()

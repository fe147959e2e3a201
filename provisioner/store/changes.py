"""What a transaction changed, handed at commit to those who act on it (outbox, metrics).

The domain notes each change it makes on the session's ``Changes`` (``changes(session)``):
the ``NodeStateLog`` / ``NodeEvent`` rows it added, and for the counters each event's
(type, status) and each move's (from, to, seconds in "from"). Layers above register an
observer here and are handed what they need as arguments, never by reading the session:

- ``before_outermost_commit``: the rows added, in order, just before the outermost commit
  of a transaction that added any, so the outbox adds its deliveries to that same commit;
- ``after_commit``: the events and moves once committed, for the metrics' counters.

A rolled-back transaction hands nothing on. ``Changes`` is kept in ``session.info`` under a
key only this module reads: that is SQLAlchemy's place for per-session state, and it lets a
change be noted on any session, the app's or one a test opens.
"""

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session
from sqlalchemy.orm import SessionTransaction

_KEY = "provisioner.store.changes"

RowsObserver = Callable[[Session, list[Any]], None]
CountsObserver = Callable[[list[tuple[str, str]], list[tuple[str, str, float]]], None]

_before_outermost_commit: list[RowsObserver] = []
_after_commit: list[CountsObserver] = []


@dataclass(eq=False)
class Changes:
    """The changes noted in a session's current transaction."""

    #: Rows added, in order: ORM objects, or records of rows inserted in bulk.
    rows: list[Any] = field(default_factory=list)
    #: (event_type, status) of each event recorded.
    events: list[tuple[str, str]] = field(default_factory=list)
    #: (from, to, seconds spent in "from") of each move made.
    transitions: list[tuple[str, str, float]] = field(default_factory=list)


def changes(session: Session) -> Changes:
    """The changes noted in ``session``'s current transaction, to add to."""
    found = session.info.get(_KEY)
    if found is None:
        found = session.info[_KEY] = Changes()
    return found


def before_outermost_commit(observer: RowsObserver) -> RowsObserver:
    """Register ``observer(session, rows)``, called before the outermost commit of a
    transaction that added rows; what it adds to the session commits with them."""
    _before_outermost_commit.append(observer)
    return observer


def after_commit(observer: CountsObserver) -> CountsObserver:
    """Register ``observer(events, transitions)``, called once a transaction that recorded
    events or moves has committed."""
    _after_commit.append(observer)
    return observer


@event.listens_for(Session, "before_commit")
def _hand_rows_over(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the outermost commit hands on the whole transaction's rows
    found = session.info.get(_KEY)
    if found is None or not found.rows:
        return
    rows, found.rows = found.rows, []
    for observer in _before_outermost_commit:
        observer(session, rows)


@event.listens_for(Session, "after_commit")
def _hand_counts_over(session: Session) -> None:
    found = session.info.get(_KEY)
    if found is None or not (found.events or found.transitions):
        return
    events, transitions = found.events, found.transitions
    found.events, found.transitions = [], []
    for observer in _after_commit:
        observer(events, transitions)


@event.listens_for(Session, "after_rollback")
def _forget_counts(session: Session) -> None:
    found = session.info.get(_KEY)
    if found is not None:
        found.events, found.transitions = [], []


@event.listens_for(Session, "after_soft_rollback")
def _forget_rows(session: Session, previous_transaction: SessionTransaction) -> None:
    found = session.info.get(_KEY)
    if found is not None and previous_transaction.parent is None:
        found.rows = []

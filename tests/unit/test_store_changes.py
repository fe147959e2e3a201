"""``store.changes``: what a transaction noted reaches the observers at commit, as arguments,
and nothing of a rolled-back transaction does (real SQLite file, plain sessions)."""

import pytest
from sqlalchemy import create_engine
from sqlalchemy import text
from sqlalchemy.orm import Session

from provisioner.store import changes


@pytest.fixture
def heard(monkeypatch):
    """The observers' calls, with only this test's observers registered."""
    calls: dict[str, list] = {"rows": [], "counts": []}

    def on_rows(session, rows):
        calls["rows"].append((session.in_transaction(), list(rows)))

    def on_counts(events, transitions):
        calls["counts"].append((list(events), list(transitions)))

    monkeypatch.setattr(changes, "_before_outermost_commit", [on_rows])
    monkeypatch.setattr(changes, "_after_commit", [on_counts])
    return calls


@pytest.fixture
def session(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'changes.db'}")
    with Session(engine) as session:
        yield session
    engine.dispose()


def note(session, row, event=("heartbeat", "success"), move=None):
    session.execute(text("SELECT 1"))  # begin
    noted = changes.changes(session)
    noted.rows.append(row)
    noted.events.append(event)
    if move:
        noted.transitions.append(move)


def test_commit_hands_rows_before_and_counts_after(session, heard):
    note(session, "first")
    note(session, "second", move=("installing", "installed", 12.0))
    session.commit()
    assert heard["rows"] == [(True, ["first", "second"])]  # still inside the transaction
    assert heard["counts"] == [
        ([("heartbeat", "success"), ("heartbeat", "success")], [("installing", "installed", 12.0)])
    ]
    session.execute(text("SELECT 1"))
    session.commit()
    assert len(heard["rows"]) == 1 and len(heard["counts"]) == 1  # handed over once


def test_savepoint_commit_waits_for_the_outermost(session, heard):
    note(session, "outer")
    with session.begin_nested():
        note(session, "inner")
    assert heard["rows"] == []
    session.commit()
    assert heard["rows"] == [(True, ["outer", "inner"])]


def test_rollback_hands_nothing_on(session, heard):
    note(session, "lost", move=("installing", "pending", 3.0))
    session.rollback()
    note(session, "kept")
    session.commit()
    assert heard["rows"] == [(True, ["kept"])]
    assert heard["counts"] == [([("heartbeat", "success")], [])]

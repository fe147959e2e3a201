"""``SingleReads`` on a SQLite file runs its statements as ``PreparedRead``s, straight on the
driver. Whatever a node row holds, the prepared read gives the values, and the names,
SQLAlchemy's own execution gives; errors still arrive as SQLAlchemy's, and a listener on
SQLAlchemy's statement events still sees every read.
"""

from datetime import UTC
from datetime import datetime

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import Boolean
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import column
from sqlalchemy import delete
from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy import table
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from provisioner.coltypes import UTCDateTime
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeTag
from provisioner.store.node_tags import tags_of
from provisioner.store.nodes_repo import _NODE_ROW_BY_MAC
from provisioner.store.nodes_repo import glance_node
from provisioner.store.reads import PreparedRead
from provisioner.web.context import single_reads

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

MAC = "52:54:00:aa:bb:01"
HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
#: Text as a node field may hold it: any character SQLite stores (no surrogates, no NUL).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def _strategy(col) -> st.SearchStrategy:
    if isinstance(col.type, UTCDateTime):
        values = moments
    elif isinstance(col.type, Boolean):
        values = st.booleans()
    elif isinstance(col.type, Integer):
        values = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    else:
        assert isinstance(col.type, String | Text), col.type
        values = texts
    return st.none() | values if col.nullable else values


#: A node row with every column drawn by its type, None wherever the column allows it.
node_rows = st.fixed_dictionaries(
    {col.key: _strategy(col) for col in Node.__table__.columns if col.key != "mac_address"}
)


def through_sqlalchemy(app, statement, parameters):
    """The first row of ``statement`` as SQLAlchemy's execution gives it."""
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(statement, parameters).first()


@given(row=node_rows)
@HYPOTHESIS
def test_a_prepared_read_gives_the_row_sqlalchemy_gives(app, row):
    with app.app_context():
        db.session.execute(delete(Node))
        db.session.execute(Node.__table__.insert().values(row | {"mac_address": MAC}))
        db.session.commit()
    read = glance_node(single_reads(app), MAC)
    expected = through_sqlalchemy(app, _NODE_ROW_BY_MAC, {"mac": MAC})
    assert read._fields == expected._fields
    assert tuple(read) == tuple(expected)
    for key in ("episode_started_at", "state_changed_at", "boot_menu", "install_attempts"):
        assert type(getattr(read, key)) is type(getattr(expected, key))
    assert read.state_changed_at.tzinfo is not None


def test_a_prepared_read_of_no_row_is_none(app):
    assert glance_node(single_reads(app), MAC) is None


def test_an_aggregate_without_a_name_is_read_by_index(app):
    """``tags_of``'s one unnamed column (``group_concat``) comes back as SQLAlchemy's does."""
    with app.app_context():
        db.session.execute(
            Node.__table__.insert().values(
                id="n1",
                mac_address=MAC,
                state="active",
                install_attempts=0,
                install_timeouts=0,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                updated_at=datetime(2026, 1, 1, tzinfo=UTC),
                state_changed_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        )
        db.session.add_all([NodeTag(node_id="n1", tag="rack-a"), NodeTag(node_id="n1", tag="gpu")])
        db.session.commit()
    assert sorted(tags_of(single_reads(app), "n1")) == ["gpu", "rack-a"]
    assert tags_of(single_reads(app), "missing") == []


def test_a_statement_known_only_when_run_is_not_prepared(app):
    """An expanding ``IN`` has its SQL written at execution: it goes through SQLAlchemy."""
    statement = select(Node.id).where(Node.mac_address.in_([MAC, "52:54:00:aa:bb:02"]))
    with app.app_context():
        assert PreparedRead.of(statement, db.engine.dialect) is None
        assert PreparedRead.of(_NODE_ROW_BY_MAC, db.engine.dialect) is not None
    assert single_reads(app).first(statement, {}) is None


def test_a_driver_error_arrives_as_sqlalchemys(app):
    """The boot view tells an unavailable database by SQLAlchemy's ``OperationalError``: a
    prepared read that fails raises that, not the driver's own error."""
    missing = select(table("no_such_table", column("id")).c.id)
    with pytest.raises(OperationalError, match="no such table"):
        single_reads(app).first(missing, {})


def test_a_listener_on_statement_events_sees_every_read(app):
    """Tests (and tools) that watch SQLAlchemy's ``before_cursor_execute`` see the reads."""
    seen: list[str] = []

    def note(conn, cursor, statement, *args):
        seen.append(statement)

    reads = single_reads(app)
    glance_node(reads, MAC)  # the thread's connection is open before the listener
    event.listen(Engine, "before_cursor_execute", note)
    try:
        glance_node(reads, MAC)
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert any("FROM nodes" in statement for statement in seen)
    glance_node(reads, MAC)
    assert len(seen) == 1


def test_past_the_limit_a_statement_is_not_compiled_for_one_read(app, monkeypatch):
    """Once ``PREPARED_LIMIT`` statements are kept, a new one (one built per call) is not
    compiled for a single read: SQLAlchemy runs it, with the same answer."""
    compiled: list = []
    monkeypatch.setattr("provisioner.store.reads.PREPARED_LIMIT", 0)
    monkeypatch.setattr(PreparedRead, "of", classmethod(lambda cls, *args: compiled.append(args)))
    statement = select(Node.id).where(Node.mac_address == MAC)
    assert single_reads(app).first(statement, {}) is None
    assert compiled == []

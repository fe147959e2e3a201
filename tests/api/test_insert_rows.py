"""``database.insert_rows``: many rows in one statement, their values and order kept."""

from datetime import timedelta

from sqlalchemy import select

from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.transactions import write_transaction
from provisioner.store.writes import insert_rows


def test_rows_keep_their_values_types_and_order(app, clock):
    now = clock()
    with app.app_context(), write_transaction(db.session):
        node = Node(mac_address="52:54:00:aa:00:01", state="discovered")
        db.session.add(node)
        db.session.flush()
        node_id = node.id
        rows = [
            {
                "node_id": node_id,
                "message": f"row {n}",
                "progress": n * 10,
                "metadata": {"n": n, "nested": {"ok": True}, "text": "é ünïcode"},
            }
            for n in range(3)
        ]
        rows.append({"node_id": node_id, "message": None, "progress": None, "metadata": None})
        insert_rows(
            db.session,
            NodeEvent.__table__,
            rows,
            same={"event_type": "heartbeat", "status": "success", "created_at": now},
        )

    with app.app_context():
        stored = db.session.scalars(select(NodeEvent).order_by(NodeEvent.id)).all()
    assert [(e.message, e.progress, e.metadata_) for e in stored] == [
        (row["message"], row["progress"], row["metadata"]) for row in rows
    ]
    assert {(e.node_id, e.event_type, e.status, e.created_at) for e in stored} == {
        (node_id, "heartbeat", "success", now)
    }
    assert stored[0].created_at.utcoffset() == timedelta(0)


def test_no_rows_writes_nothing(app, clock):
    with app.app_context(), write_transaction(db.session):
        insert_rows(db.session, NodeEvent.__table__, [], same={"created_at": clock()})
    with app.app_context():
        assert db.session.scalars(select(NodeEvent)).all() == []

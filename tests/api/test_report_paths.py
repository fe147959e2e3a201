"""One rule, two carry-outs: a report written with plain SQL writes what the ORM path writes.

``reports.report_job`` applies a report that moves nothing with one UPDATE and one INSERT
(held back to the end of a group-commit batch), and every other report through the ORM and
``lifecycle``; with ``fast=False`` every report takes the ORM path. Hypothesis generates a
node (state, attempts, progress, timestamps, tokens) and a sequence of reports (every
event type, status-only ones, legacy-style failures, repeated ``event_id``s, current,
previous and wrong tokens, lookups by MAC and by id as phone-home does) and feeds the
sequence to three twins of that node:

- the ORM path, one write transaction per report (the reference);
- ``receive_report`` with the app's writer (``run_write``: the group writer on SQLite);
- the fast path with every report of the sequence in ONE transaction with held-back writes,
  as a group-commit batch under load runs them.

The node rows, state-log rows, event rows and the answers must be the same, on SQLite and
PostgreSQL.
"""

import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlalchemy import select

from provisioner.domain.events import REPORTED_TYPES
from provisioner.domain.events import EventStatus
from provisioner.domain.lifecycle import State
from provisioner.domain.reports import Refused
from provisioner.domain.reports import Report
from provisioner.domain.reports import Reporter
from provisioner.domain.reports import ReportSettings
from provisioner.domain.reports import receive_report
from provisioner.domain.reports import report_job
from provisioner.domain.tokens import token_hash
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.models import NodeStateLog
from provisioner.store.group_commit import EXTENSION_KEY
from provisioner.store.group_commit import run_write
from provisioner.store.transactions import write_transaction
from provisioner.store.writes import deferring_writes
from provisioner.web.schemas import NodeSchema

MAX_ATTEMPTS = 3
BASE = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TOKENS = {"current": "current-token", "previous": "previous-token", "wrong": "wrong-token"}
SCHEMA = NodeSchema()
PATHS = ("orm", "writer", "batch")

HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

moments = st.integers(min_value=0, max_value=7200).map(lambda s: BASE - timedelta(seconds=s))
nodes = st.fixed_dictionaries(
    {
        # Half of them where reports move nodes, half anywhere.
        "state": st.sampled_from([State.PENDING, State.INSTALLING, State.INSTALLED])
        | st.sampled_from(list(State)),
        "install_attempts": st.integers(min_value=0, max_value=MAX_ATTEMPTS),
        "progress": st.none() | st.integers(min_value=0, max_value=100),
        "state_changed_at": moments,
        "last_event_at": st.none() | moments,
        "hostname": st.none() | st.just("old-name"),
        "has_previous": st.booleans(),
    }
)
reports = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(REPORTED_TYPES[1:6])
        | st.sampled_from([*REPORTED_TYPES, None]),
        "status": st.sampled_from(list(EventStatus)),
        "message": st.none() | st.sampled_from(["disk full", "ok"]),
        "progress": st.none() | st.integers(min_value=0, max_value=100),
        "metadata": st.none() | st.just({"instance_id": "i-1"}),
        "client_event_id": st.none() | st.sampled_from(["a", "b"]),
        "hardware": st.fixed_dictionaries(
            {}, optional={"hostname": st.just("new-name"), "ip_address": st.just("10.0.0.9")}
        ),
        "token": st.just("current") | st.sampled_from([*TOKENS, None]),
        "by_ref": st.booleans(),
        "seconds": st.integers(min_value=0, max_value=90),
    }
)


def respond(node, outcome) -> dict[str, Any]:
    return {"data": SCHEMA.dump(node), "message": outcome.message}


class Twins:
    """Nodes made alike, one per path; ids and MACs told apart by the path's number."""

    def __init__(self, example: int) -> None:
        self.ids = {
            path: f"00000000-0000-4000-8000-{example:06d}{n:06d}" for n, path in enumerate(PATHS)
        }
        self.macs = {
            path: f"52:54:{example // 256:02x}:{example % 256:02x}:00:{n:02x}"
            for n, path in enumerate(PATHS)
        }

    def create(self, session, spec: dict[str, Any]) -> None:
        columns = {key: value for key, value in spec.items() if key != "has_previous"}
        for path in PATHS:
            session.add(
                Node(
                    id=self.ids[path],
                    mac_address=self.macs[path],
                    created_at=BASE - timedelta(days=1),
                    updated_at=BASE - timedelta(days=1),
                    report_token_hash=token_hash(TOKENS["current"]),
                    previous_report_token_hash=(
                        token_hash(TOKENS["previous"]) if spec["has_previous"] else None
                    ),
                    **columns,
                )
            )

    def neutral(self, path: str, value: Any) -> Any:
        """``value`` (rows, answers) with this path's node id and MAC replaced."""
        text = json.dumps(value, default=str, sort_keys=True)
        text = text.replace(self.ids[path], "<id>").replace(self.macs[path], "<mac>")
        return json.loads(text)


def rows_of(session, node_id: str) -> dict[str, Any]:
    """The node's row, its state-log rows and its event rows (without their ids)."""
    node = session.execute(select(Node.__table__).where(Node.id == node_id)).one()._asdict()
    logs = session.execute(
        select(NodeStateLog.__table__)
        .where(NodeStateLog.node_id == node_id)
        .order_by(NodeStateLog.id)
    ).all()
    events = session.execute(
        select(NodeEvent.__table__).where(NodeEvent.node_id == node_id).order_by(NodeEvent.id)
    ).all()
    return {
        "node": node,
        "logs": [{k: v for k, v in row._asdict().items() if k != "id"} for row in logs],
        "events": [{k: v for k, v in row._asdict().items() if k != "id"} for row in events],
    }


def as_report(spec: dict[str, Any]) -> Report:
    return Report(
        event_type=spec["event_type"],
        status=spec["status"],
        message=spec["message"],
        progress=spec["progress"],
        metadata=spec["metadata"],
        client_event_id=spec["client_event_id"],
        hardware=spec["hardware"],
    )


def reporter(twins: Twins, path: str, spec: dict[str, Any]) -> Reporter:
    token = TOKENS.get(spec["token"])
    if spec["by_ref"]:
        return Reporter(twins.ids[path], token, by_ref=True, not_found="gone")
    return Reporter(twins.macs[path], token, not_found="gone")


def outcome(result) -> Any:
    return ["refused", result.status, result.reason] if isinstance(result, Refused) else result


@given(node=nodes, sequence=st.lists(reports, min_size=1, max_size=6), token_mode=st.booleans())
@HYPOTHESIS
def test_every_path_writes_the_same_rows(app, node, sequence, token_mode):
    counter = app.extensions.setdefault("test.examples", [0])
    counter[0] += 1
    twins = Twins(counter[0])
    with app.app_context():
        with write_transaction(db.session) as session:
            twins.create(session, node)
        clock = [BASE]
        answers: dict[str, list] = {path: [] for path in PATHS}

        def settings_at(moment: datetime) -> ReportSettings:
            return ReportSettings(
                token_mode=token_mode,
                peer_ip="10.1.1.1",
                max_attempts=MAX_ATTEMPTS,
                now=moment,
                respond=respond,
            )

        batch = []
        for spec in sequence:
            clock[0] += timedelta(seconds=spec["seconds"])
            moment, item = clock[0], as_report(spec)
            with write_transaction(db.session) as session:
                job = report_job(
                    reporter(twins, "orm", spec), item, settings_at(moment), fast=False
                )
                answers["orm"].append(outcome(job(session)))
            answers["writer"].append(
                outcome(
                    receive_report(
                        run_write, reporter(twins, "writer", spec), item, settings_at(moment)
                    )
                )
            )
            batch.append(report_job(reporter(twins, "batch", spec), item, settings_at(moment)))
        with write_transaction(db.session) as session, deferring_writes(session):
            answers["batch"] = [outcome(job(session)) for job in batch]

        written = {}
        for path in PATHS:
            written[path] = twins.neutral(
                path, [rows_of(db.session, twins.ids[path]), answers[path]]
            )
        db.session.rollback()
        with write_transaction(db.session) as session:  # keep the database small
            session.execute(delete(NodeEvent).where(NodeEvent.node_id.in_(twins.ids.values())))
            session.execute(
                delete(NodeStateLog).where(NodeStateLog.node_id.in_(twins.ids.values()))
            )
            session.execute(delete(Node).where(Node.id.in_(twins.ids.values())))
    assert written["writer"] == written["orm"]
    assert written["batch"] == written["orm"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_phone_home_goes_through_the_group_writer(app, client):
    """Phone-home is a report like any other: on SQLite the group writer commits it."""
    node = client.post("/api/v1/nodes", json={"mac_address": "52:54:00:77:00:01"}).json["data"]
    moved = client.patch(
        f"/api/v1/nodes/{node['id']}/state", json={"state": "installed", "force": True}
    )
    assert moved.status_code == 200, moved.json
    writer = app.extensions[EXTENSION_KEY]
    before = writer.batches

    answer = client.post(f"/api/v1/nodes/{node['id']}/phone-home", data={"hostname": "n1"})

    assert answer.status_code == 200, answer.json
    assert answer.json["data"]["state"] == "active"
    assert writer.batches == before + 1

"""The SQLite group-commit writer: many reports per transaction, one bad job fails alone."""

import threading
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor

import dbcheck
import pytest
from apihelpers import node_in_state
from sqlalchemy import insert
from sqlalchemy import text
from werkzeug.exceptions import Unauthorized

from provisioner.domain.events import EventType
from provisioner.domain.reports import Report
from provisioner.models import NodeTag
from provisioner.store.group_commit import EXTENSION_KEY
from provisioner.store.group_commit import GroupWriter
from provisioner.store.writes import defer_write
from provisioner.web.events import views

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])

THREADS = 16
REPORTS_PER_THREAD = 25


def writer_of(app) -> GroupWriter:
    return app.extensions[EXTENSION_KEY]


def mac(number: int) -> str:
    return f"52:54:00:c0:00:{number:02x}"


@SQLITE
def test_concurrent_reports_share_transactions_and_all_land(app, client):
    """16 threads report at once: every report is answered 200 and stored exactly once,
    in fewer transactions than reports."""
    for number in range(THREADS):
        node_in_state(client, mac(number), "installing")
    start = threading.Barrier(THREADS)

    def send(number: int) -> list[int]:
        own = app.test_client()
        start.wait()
        return [
            own.post(
                "/api/v1/report",
                json={
                    "mac_address": mac(number),
                    "event": "install_progress",
                    "progress": step,
                    "event_id": f"{number}-{step}",
                },
            ).status_code
            for step in range(REPORTS_PER_THREAD)
        ]

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [code for codes in pool.map(send, range(THREADS)) for code in codes]

    total = THREADS * REPORTS_PER_THREAD
    assert statuses == [200] * total
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    assert dbcheck.count_rows(url, "node_events") == total
    distinct = dbcheck.rows(url, "SELECT COUNT(DISTINCT client_event_id) FROM node_events")
    assert distinct == [(total,)]
    assert 0 < writer_of(app).batches < total
    progress = dbcheck.rows(url, "SELECT DISTINCT progress FROM nodes")
    assert progress == [(REPORTS_PER_THREAD - 1,)]


def queue_batch(app, jobs) -> list[Future]:
    """Queue ``jobs`` before the writer starts, so that it takes them as one batch."""
    writer = writer_of(app)
    futures = []
    for job in jobs:
        future: Future = Future()
        writer.jobs.put((job, future))
        futures.append(future)
    writer._ensure_running()
    return futures


def insert_tag(tag: str):
    def job(session):
        session.execute(
            text("INSERT INTO node_tags (node_id, tag) SELECT id, :tag FROM nodes"), {"tag": tag}
        )
        return tag

    return job


@SQLITE
def test_a_refusal_goes_back_to_its_request_and_the_batch_commits(app, client):
    node_in_state(client, mac(1), "installing")

    def refuse(session):
        raise Unauthorized("bad token")

    futures = queue_batch(app, [insert_tag("a"), refuse, insert_tag("b")])

    assert futures[0].result(timeout=10) == "a"
    assert isinstance(futures[1].exception(timeout=10), Unauthorized)
    assert futures[2].result(timeout=10) == "b"
    assert writer_of(app).batches == 1
    tags = dbcheck.rows(app.config["SQLALCHEMY_DATABASE_URI"], "SELECT tag FROM node_tags")
    assert sorted(tags) == [("a",), ("b",)]


@SQLITE
def test_a_failing_job_fails_alone_and_its_writes_are_undone(app, client):
    """The batch rolls back, then each job runs in its own transaction."""
    node_in_state(client, mac(1), "installing")

    def write_then_fail(session):
        insert_tag("doomed")(session)
        raise RuntimeError("disk on fire")

    futures = queue_batch(app, [insert_tag("a"), write_then_fail, insert_tag("b")])

    assert futures[0].result(timeout=10) == "a"
    assert isinstance(futures[1].exception(timeout=10), RuntimeError)
    assert futures[2].result(timeout=10) == "b"
    tags = dbcheck.rows(app.config["SQLALCHEMY_DATABASE_URI"], "SELECT tag FROM node_tags")
    assert sorted(tags) == [("a",), ("b",)]


@SQLITE
def test_the_writer_stops_when_idle_and_starts_again(app, client, monkeypatch):
    monkeypatch.setattr("provisioner.store.group_commit.IDLE_SECONDS", 0.05)
    node_in_state(client, mac(1), "installing")
    writer = writer_of(app)
    assert writer.submit(insert_tag("a")) == "a"
    first = writer.thread
    assert first is not None
    first.join(timeout=10)
    assert not first.is_alive()

    assert writer.submit(insert_tag("b")) == "b"
    assert writer.thread is not first


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_needs_no_writer(app):
    """PostgreSQL runs writers side by side; reports use their own transactions there."""
    assert EXTENSION_KEY not in app.extensions


def report_job(mac_address: str, event: str, clock, *, progress=None, event_id=None):
    """The write the report view hands to the writer (open report mode: no token)."""
    return views.report_job(
        mac_address,
        None,
        Report(event_type=EventType(event), progress=progress, client_event_id=event_id),
        {
            "peer_ip": None,
            "max_attempts": 3,
            "now": clock(),
            "respond": lambda node, outcome: {"effect": outcome.effect},
        },
    )


@SQLITE
def test_a_move_and_a_later_report_in_one_batch_keep_their_order(app, client, clock):
    """The move goes through the ORM, the heartbeat after it through plain statements: the
    node ends installed with the heartbeat as its last event, not the move's."""
    node_in_state(client, mac(1), "installing")

    futures = queue_batch(
        app,
        [report_job(mac(1), "install_complete", clock), report_job(mac(1), "heartbeat", clock)],
    )

    assert futures[0].result(timeout=10) == {"effect": "installing→installed"}
    assert futures[1].result(timeout=10) == {"effect": "logged"}
    assert writer_of(app).batches == 1
    node = client.get(f"/api/v1/nodes/{mac(1)}").json["data"]
    assert node["state"] == "installed"
    assert node["last_event"]["type"] == "heartbeat"


# -- writes held back to the end of the batch (database.deferring_writes) -----------------


@SQLITE
def test_a_report_reads_what_an_earlier_report_in_its_batch_held_back(app, client, clock):
    """The second progress report has no figure of its own and shows the node's: the first
    report's 40, which is still held back when the second reads the node."""
    node_in_state(client, mac(1), "installing")

    futures = queue_batch(
        app,
        [
            report_job(mac(1), "install_progress", clock, progress=40),
            report_job(mac(1), "install_progress", clock),
        ],
    )

    assert [future.result(timeout=10) for future in futures] == [
        {"effect": "progress 40%"},
        {"effect": "progress 40%"},
    ]
    assert writer_of(app).batches == 1
    assert client.get(f"/api/v1/nodes/{mac(1)}").json["data"]["progress"] == 40


@SQLITE
def test_a_retry_in_the_same_batch_is_answered_from_the_held_back_event(app, client, clock):
    node_in_state(client, mac(1), "installing")
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    before = dbcheck.count_rows(url, "node_events")

    futures = queue_batch(
        app,
        [
            report_job(mac(1), "install_progress", clock, progress=7, event_id="once"),
            report_job(mac(1), "install_progress", clock, progress=99, event_id="once"),
        ],
    )

    assert [future.result(timeout=10) for future in futures] == [{"effect": "progress 7%"}] * 2
    assert writer_of(app).batches == 1  # answered in the batch, not by re-running it
    assert dbcheck.count_rows(url, "node_events") == before + 1
    assert client.get(f"/api/v1/nodes/{mac(1)}").json["data"]["progress"] == 7


@SQLITE
def test_events_of_a_batch_keep_its_order_around_a_move(app, client, clock):
    """A move goes through the ORM; the quiet reports before it are sent first, so event
    ids follow the order the batch took its reports in."""
    for number in (1, 2, 3):
        node_in_state(client, mac(number), "installing")

    futures = queue_batch(
        app,
        [
            report_job(mac(1), "heartbeat", clock),
            report_job(mac(2), "install_complete", clock),
            report_job(mac(3), "heartbeat", clock),
        ],
    )

    for future in futures:
        future.result(timeout=10)
    ordered = dbcheck.rows(
        app.config["SQLALCHEMY_DATABASE_URI"],
        "SELECT nodes.mac_address FROM node_events JOIN nodes ON nodes.id = node_events.node_id"
        " WHERE node_events.event_type IN ('heartbeat', 'install_complete')"
        " ORDER BY node_events.id",
    )
    assert ordered == [(mac(1),), (mac(2),), (mac(3),)]


@SQLITE
def test_a_held_back_write_that_fails_fails_its_own_job_alone(app, client, clock):
    """The failure surfaces when the batch sends its held-back writes, after every job has
    run: the batch is undone and each job runs again alone."""
    node_in_state(client, mac(1), "installing")
    node_in_state(client, mac(2), "installing")

    def orphan_tag(session):
        row = {"node_id": "no-such-node", "tag": "orphan"}
        defer_write(session, insert(NodeTag.__table__), row, "no-such-node")
        return "deferred"

    futures = queue_batch(
        app,
        [
            report_job(mac(1), "install_progress", clock, progress=10),
            orphan_tag,
            report_job(mac(2), "install_progress", clock, progress=20),
        ],
    )

    assert futures[0].result(timeout=10) == {"effect": "progress 10%"}
    assert "FOREIGN KEY" in str(futures[1].exception(timeout=10))
    assert futures[2].result(timeout=10) == {"effect": "progress 20%"}
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    assert dbcheck.rows(url, "SELECT progress FROM nodes ORDER BY mac_address") == [(10,), (20,)]
    assert dbcheck.rows(url, "SELECT tag FROM node_tags") == []

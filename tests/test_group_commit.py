"""The SQLite group-commit writer: many reports per transaction, one bad job fails alone."""

import threading
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor

import dbcheck
import pytest
from apihelpers import node_in_state
from sqlalchemy import text
from werkzeug.exceptions import Unauthorized

from provisioner.events import EventType
from provisioner.group_commit import EXTENSION_KEY
from provisioner.group_commit import GroupWriter
from provisioner.nodes_repo import peek_node_for_update
from provisioner.reports import Report
from provisioner.reports import take_report

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
    monkeypatch.setattr("provisioner.group_commit.IDLE_SECONDS", 0.05)
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


def report_job(mac_address: str, event: str, clock):
    """The write a report makes, as the view hands it to the writer."""

    def job(session):
        seen = peek_node_for_update(session, mac_address)
        return take_report(
            session,
            seen,
            Report(event_type=EventType(event)),
            peer_ip=None,
            max_attempts=3,
            now=clock(),
            respond=lambda node, outcome: {"effect": outcome.effect},
        )

    return job


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

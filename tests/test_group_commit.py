"""The SQLite group-commit writer: many reports per transaction, one bad job fails alone."""

import threading
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor

import dbcheck
import pytest
from apihelpers import node_in_state
from sqlalchemy import text
from werkzeug.exceptions import Unauthorized

from provisioner.group_commit import EXTENSION_KEY
from provisioner.group_commit import GroupWriter

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

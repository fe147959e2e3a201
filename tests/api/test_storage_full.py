"""A database with no room left: recognised on both backends, refused cleanly, then forgotten.

A real SQLite file is made "full" with ``PRAGMA max_page_count`` (SQLite then fails a write
that needs a new page with SQLITE_FULL, as on a full disk). test_disk_full.py does the
same end to end on a real full file system, on both backends, and checks ``/health``
there (its probe commits a write needing no new page: a page limit cannot stop it).
"""

from collections.abc import Iterator
from concurrent.futures import Future

import dbcheck
import psycopg.errors
import pytest
from apihelpers import node_in_state
from flask import Flask
from sqlalchemy import event
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from provisioner.errors import STORAGE_FULL_MESSAGE
from provisioner.extensions import db
from provisioner.scheduler import run_sweep
from provisioner.store.group_commit import EXTENSION_KEY
from provisioner.store.transactions import is_storage_full

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
MAC = "52:54:00:f0:11:01"
#: SQLite's largest max_page_count: no limit.
UNLIMITED = 4294967294


class PageLimit:
    """Caps the pages of every connection the app checks out at the file's present size."""

    def __init__(self, app: Flask) -> None:
        with app.app_context():
            self.engine = db.engine
        self.full = False
        event.listen(self.engine, "checkout", self._on_checkout)

    def _on_checkout(self, dbapi_connection, record, proxy) -> None:
        cursor = dbapi_connection.cursor()
        if self.full:
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count = {pages}")
        else:
            cursor.execute(f"PRAGMA max_page_count = {UNLIMITED}")
        cursor.close()

    def remove(self) -> None:
        event.remove(self.engine, "checkout", self._on_checkout)


@pytest.fixture
def page_limit(app: Flask) -> Iterator[PageLimit]:
    limit = PageLimit(app)
    yield limit
    limit.remove()


def big_tags(count: int):
    """A job that writes more than fits in the pages the file has."""

    def job(session):
        session.execute(
            text("INSERT INTO node_tags (node_id, tag) SELECT id, :tag FROM nodes"),
            [{"tag": f"t{number:04d}-{'x' * 40}"} for number in range(count)],
        )
        return "big"

    return job


def small_tag(tag: str):
    def job(session):
        session.execute(
            text("INSERT INTO node_tags (node_id, tag) SELECT id, :tag FROM nodes"), {"tag": tag}
        )
        return tag

    return job


def tags(app: Flask) -> list[tuple]:
    return dbcheck.rows(app.config["SQLALCHEMY_DATABASE_URI"], "SELECT tag FROM node_tags")


def test_sqlite_full_and_postgresql_disk_full_are_recognised():
    sqlite_full = OperationalError("INSERT", {}, _sqlite_error("database or disk is full", 13))
    postgres_full = OperationalError("INSERT", {}, psycopg.errors.DiskFull("no space left"))
    locked = OperationalError("INSERT", {}, _sqlite_error("database is locked", 5))

    assert is_storage_full(sqlite_full)
    assert is_storage_full(postgres_full)
    assert not is_storage_full(locked)
    assert not is_storage_full(RuntimeError("database or disk is full"))


def _sqlite_error(message: str, code: int):
    import sqlite3

    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@SQLITE
def test_a_batch_that_runs_out_of_room_fails_every_job_and_writes_nothing(app, client, page_limit):
    """The first job fits, the second does not: the whole batch is refused, none written;
    without the limit the same writer writes again (no restart)."""
    node_in_state(client, MAC, "installing")
    writer = app.extensions[EXTENSION_KEY]
    page_limit.full = True
    futures: list[Future] = []
    for job in (small_tag("first"), big_tags(400), small_tag("last")):
        future: Future = Future()
        writer.jobs.put((job, future))
        futures.append(future)
    writer._ensure_running()

    errors = [future.exception(timeout=30) for future in futures]
    assert all(is_storage_full(error) for error in errors), errors
    assert tags(app) == []

    page_limit.full = False
    assert writer.submit(small_tag("after")) == "after"
    assert tags(app) == [("after",)]


@SQLITE
def test_a_report_with_no_room_is_a_503_naming_the_cause(app, client, page_limit):
    node_in_state(client, MAC, "installing")
    big = {"mac_address": MAC, "event": "install_progress", "message": "x" * 4000}
    page_limit.full = True

    answers = [client.post("/api/v1/report", json=big | {"event_id": f"e{n}"}) for n in range(20)]

    refused = [answer for answer in answers if answer.status_code != 200]
    assert refused, "20 reports of 4 KB each fit in the pages the file had"
    assert {answer.status_code for answer in refused} == {503}
    assert refused[0].json["message"] == STORAGE_FULL_MESSAGE
    assert refused[0].json["cause"] == "storage_full"


@SQLITE
def test_a_background_job_with_no_room_logs_one_line(app, monkeypatch, caplog):
    """The sweeper is skipped with one line naming the cause, not a traceback per run."""

    def sweep_on_a_full_disk(*args, **kwargs):
        raise OperationalError("INSERT", {}, _sqlite_error("database or disk is full", 13))

    monkeypatch.setattr("provisioner.scheduler.sweep_stalled_installs", sweep_on_a_full_disk)

    run_sweep(app)

    assert [record.getMessage() for record in caplog.records] == [
        "sweep skipped: database storage is full: database or disk is full"
    ]

"""Group commit: on SQLite, one writer thread applies queued write jobs, many per transaction.

SQLite has one writer at a time, and each transaction costs a ``BEGIN IMMEDIATE``, a commit
and the hand-over of the write lock between threads: about a quarter of a node report. Under
a boot storm the request threads therefore hand their report to this writer and wait for
its answer; the writer takes whatever has queued up meanwhile (at most one job per request
thread) and applies it in one transaction. Within it, the plain writes of reports that move
nothing are held back and sent together at the end (``writes.deferring_writes``).

A job is a function of the writer's session. It may refuse (raise an ``HTTPException``, such
as a 401 for a bad token) only before it writes: the refusal goes back to its request and the
rest of the batch carries on. Any other error rolls the whole batch back, and its jobs are
then run again one transaction each, so one bad job never fails its neighbours; except when
the database has no room left (``is_storage_full``): that is no job's fault, so every job of
the batch gets the error at once (the requests answer 503) and none of them is written.

PostgreSQL runs writers side by side with row locks; there a job simply runs in the
request's own write transaction (``run_write``).
"""

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from typing import TypeVar

from flask import Flask
from flask import current_app
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from provisioner.extensions import db
from provisioner.store.transactions import is_storage_full
from provisioner.store.transactions import write_transaction
from provisioner.store.writes import deferring_writes

T = TypeVar("T")
Job = Callable[[Session], Any]

EXTENSION_KEY = "provisioner.store.group_commit"
#: Most jobs one transaction takes; request threads (16) bound it in practice.
MAX_BATCH = 64
#: The writer thread ends after this long without work, and starts again when needed.
IDLE_SECONDS = 2.0


class GroupWriter:
    """The app's writer thread and its queue."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.jobs: queue.SimpleQueue[tuple[Job, Future]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.batches = 0

    def submit(self, job: Callable[[Session], T]) -> T:
        """Run ``job`` in the writer's next transaction; return its result once committed."""
        future: Future = Future()
        self.jobs.put((job, future))
        self._ensure_running()
        return future.result()

    def _ensure_running(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._serve, name="provisioner-group-commit", daemon=True
                )
                self.thread.start()

    def _serve(self) -> None:
        with self.app.app_context():
            while True:
                try:
                    first = self.jobs.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self.lock:
                        if self.jobs.empty():
                            self.thread = None
                            return
                    continue
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self.jobs.get_nowait())
                    except queue.Empty:
                        break
                try:
                    self._commit(batch)
                except Exception as error:  # never leave a request waiting forever
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                finally:
                    db.session.remove()

    def _commit(self, batch: list[tuple[Job, Future]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with write_transaction(db.session) as session, deferring_writes(session):
                for job, _ in batch:
                    try:
                        outcomes.append((True, job(session)))
                    except HTTPException as refusal:
                        outcomes.append((False, refusal))
        except Exception as error:  # handed to the waiting requests
            if len(batch) == 1 or is_storage_full(error):
                for _, future in batch:  # rolled back: none of them was written
                    future.set_exception(error)
                return
            for item in batch:  # find the bad job: each alone, in a transaction of its own
                self._commit([item])
            return
        self.batches += 1
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def run_write(job: Callable[[Session], T]) -> T:
    """Run ``job`` in a write transaction: the group-commit writer's on SQLite, else its own."""
    writer = current_app.extensions.get(EXTENSION_KEY)
    if writer is None:
        with write_transaction(db.session) as session:
            return job(session)
    return writer.submit(job)


def init_app(app: Flask) -> None:
    """Give a SQLite-backed app its writer (started on first use)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        app.extensions[EXTENSION_KEY] = GroupWriter(app)

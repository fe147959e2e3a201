"""End to end: ``provisioner serve`` on PostgreSQL when the database goes away and comes back.

The server reaches PostgreSQL through ``tcpproxy.TcpProxy`` while client threads keep
reporting. The proxy is cut twice: once so that every connection is reset (a database that
crashed or restarted), once so that new connections are never answered (a host that vanished:
only the connect timeout ends the wait). Reports during an outage must get a 503 JSON, never a
500 or a hang (no answer within ``CLIENT_TIMEOUT_SECONDS``); after ``restore()`` they succeed
again without restarting the server.
Every report carries an ``event_id``, so the database tells exactly which were recorded:
each 200 report is one row, a 503 report sent while the database was away is none, and a
retry of every 503 report records it exactly once.

Separately, the server's sessions are killed with ``pg_terminate_backend``; the pool's
pre-ping must notice and reconnect, so at most one report fails.

The tests wait on what they can observe (reports answered, sessions gone, sweeps counted in
``/metrics``), never for a fixed time, so a loaded machine only makes them slower. How fast
the 503s come is a figure printed here, not asserted.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import databases
import pytest
import sqlalchemy as sa
from serverproc import ServerProcess
from serverproc import finished_sweeps
from serverproc import start_server
from sqlalchemy.engine import make_url
from tcpproxy import TcpProxy
from workflowfiles import write_test_workflow

pytestmark = pytest.mark.e2e

CONNECT_TIMEOUT_SECONDS = 2
POOL_TIMEOUT_SECONDS = 2
#: The client gives up here; a report still unanswered by then counts as a hang.
CLIENT_TIMEOUT_SECONDS = 30
#: How long a wait for something observable may take before the test fails: only a hang.
WAIT_SECONDS = 60
NODE_COUNT = 12
REPORTER_THREADS = 4
#: Reports each phase waits for (per reporter thread) before moving on.
REPORTS_PER_PHASE = 3
REPORT_PAUSE_SECONDS = 0.02
#: The sweeper test's install timeout; the database is cut until it has passed.
INSTALL_TIMEOUT_SECONDS = 3
WORKFLOW_ID = "fault-os"
UNAVAILABLE_MESSAGES = {"Database unavailable; retry shortly", "Database busy; retry shortly"}


def mac_of(number: int) -> str:
    return f"52:54:00:fa:{number // 256:02x}:{number % 256:02x}"


@pytest.fixture
def admin_url() -> str:
    url, reason = databases.postgres_admin_url()
    if url is None:
        pytest.skip(reason)
    return url


@pytest.fixture
def scratch_url(admin_url: str) -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (the server migrates it)."""
    url = databases.create_scratch_database(admin_url)
    try:
        yield url
    finally:
        databases.drop_database(admin_url, url)


@pytest.fixture
def scratch_engine(scratch_url: str) -> Iterator[sa.Engine]:
    """The test's own connection to the scratch database (direct, never through a proxy)."""
    engine = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def proxy(admin_url: str) -> Iterator[TcpProxy]:
    """A proxy in front of the PostgreSQL server the admin URL names."""
    target = make_url(admin_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as running:
        yield running


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(directory, WORKFLOW_ID)
    return directory


def fault_server(
    tmp_path: Path, url: str, workflows_dir: Path, **settings: Any
) -> AbstractContextManager[ServerProcess]:
    """``provisioner serve`` on ``url`` with short database timeouts and open reports."""
    return start_server(
        tmp_path,
        database_url=url,
        WORKFLOWS_DIR=workflows_dir,
        DATABASE_CONNECT_TIMEOUT=CONNECT_TIMEOUT_SECONDS,
        DATABASE_POOL_TIMEOUT=POOL_TIMEOUT_SECONDS,
        REPORT_AUTH="open",
        **settings,
    )


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parsed = make_url(url).set(host=proxy.host, port=proxy.port)
    return parsed.render_as_string(hide_password=False)


def prepare_installing_nodes(server: ServerProcess) -> None:
    """Create the nodes with the workflow, queue them and boot them into installing."""
    for number in range(NODE_COUNT):
        mac = mac_of(number)
        body = {"mac_address": mac, "workflow_id": WORKFLOW_ID}
        assert server.post_json("/api/v1/nodes", body).status == 201
        assert server.patch_json(f"/api/v1/nodes/{mac}/state", {"state": "pending"}).status == 200
        assert "kernel " in server.get(f"/api/v1/boot?mac={mac}").text


# -- reporting ------------------------------------------------------------------------------


@dataclass
class Sent:
    """One report and how it was answered (``status`` None: no answer in time)."""

    body: dict
    started: float
    finished: float
    status: int | None
    answer: Any

    @property
    def event_id(self) -> str:
        return self.body["event_id"]

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class Reporters:
    """Client threads that report for the installing nodes until stopped."""

    def __init__(self, server: ServerProcess, threads: int = REPORTER_THREADS) -> None:
        self.server = server
        self.sent: list[Sent] = []
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.run, args=(index,), daemon=True)
            for index in range(threads)
        ]

    def __enter__(self) -> "Reporters":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_SECONDS + 5)

    def run(self, index: int) -> None:
        count = 0
        while not self.stopping.is_set():
            number = (index + count * len(self.threads)) % NODE_COUNT
            event = "install_progress" if count % 3 else "heartbeat"
            body: dict[str, Any] = {
                "mac_address": mac_of(number),
                "event": event,
                "event_id": f"reporter-{index}-{count}",
            }
            if event == "install_progress":
                body["progress"] = count % 100
            self.send(body)
            count += 1
            self.stopping.wait(REPORT_PAUSE_SECONDS)  # pacing only, not coordination

    def send(self, body: dict) -> Sent:
        sent = send_report(self.server, body)
        with self.changed:
            self.sent.append(sent)
            self.changed.notify_all()
        return sent

    def wait_for(self, enough: Callable[[], bool], what: str) -> float:
        """Wait until ``enough()`` holds as reports come in; return the moment it did."""
        deadline = time.monotonic() + WAIT_SECONDS
        with self.changed:
            while not enough():
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"waited {WAIT_SECONDS} s for {what}"
                self.changed.wait(remaining)
        return time.monotonic()

    def wait_for_answers(self, since: float, count: int, status: int | None = None) -> float:
        """Wait until ``count`` reports sent at or after ``since`` (with ``status``) came back."""

        def enough() -> bool:
            answered = self.since(since)
            return sum(status in (None, item.status) for item in answered) >= count

        return self.wait_for(enough, f"{count} report(s) answered {status or ''}")

    def between(self, start: float, end: float) -> list[Sent]:
        """Reports sent and answered entirely within ``[start, end]``."""
        with self.lock:
            return [sent for sent in self.sent if sent.started >= start and sent.finished <= end]

    def since(self, start: float) -> list[Sent]:
        with self.lock:
            return [sent for sent in self.sent if sent.started >= start]


def send_report(server: ServerProcess, body: dict) -> Sent:
    started = time.monotonic()
    try:
        status, _, answer = server.post_json(
            "/api/v1/report", body, timeout=CLIENT_TIMEOUT_SECONDS
        )
    except OSError as exc:  # a timeout: the server hung
        status, answer = None, repr(exc)
    return Sent(body, started, time.monotonic(), status, answer)


def timed_get(server: ServerProcess, path: str) -> tuple[int | None, float, Any]:
    """GET ``path``: status (None if it did not answer in time), seconds taken, body."""
    started = time.monotonic()
    try:
        status, _, body = server.get(path, timeout=CLIENT_TIMEOUT_SECONDS)
    except OSError as exc:
        status, body = None, repr(exc)
    return status, time.monotonic() - started, body


# -- checks ---------------------------------------------------------------------------------


def check_answers(sent: list[Sent]) -> None:
    """Every report answered (no hang) 200 or a 503 JSON envelope."""
    wrong = [item for item in sent if item.status not in (200, 503)]
    assert wrong == [], f"{len(wrong)} report(s) neither 200 nor 503, first: {wrong[:3]}"
    for item in sent:
        if item.status == 503:
            assert isinstance(item.answer, dict), item
            assert item.answer["code"] == 503, item
            assert item.answer["message"] in UNAVAILABLE_MESSAGES, item


def recorded_event_ids(engine: sa.Engine) -> Counter:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT client_event_id, count(*) FROM node_events "
                "WHERE client_event_id IS NOT NULL GROUP BY 1"
            )
        )
        return Counter(dict(rows.all()))


def check_node_rows_match_events(engine: sa.Engine) -> None:
    """Each node's summary columns agree with its newest events: no half-applied report."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT n.mac_address, n.last_event_type, n.last_event_at, n.progress, "
                "  (SELECT e.event_type FROM node_events e WHERE e.node_id = n.id "
                "   ORDER BY e.id DESC LIMIT 1), "
                "  (SELECT e.created_at FROM node_events e WHERE e.node_id = n.id "
                "   ORDER BY e.id DESC LIMIT 1), "
                "  (SELECT e.progress FROM node_events e WHERE e.node_id = n.id "
                "   AND e.event_type = 'install_progress' ORDER BY e.id DESC LIMIT 1) "
                "FROM nodes n"
            )
        ).all()
    for mac, last_type, last_at, progress, newest_type, newest_at, newest_progress in rows:
        assert (last_type, last_at) == (newest_type, newest_at), mac
        assert progress == (newest_progress or 0), mac


def retry_unanswered(server: ServerProcess, sent: list[Sent]) -> list[Sent]:
    """Send every report that got no 200 again, with the same ``event_id``."""
    bodies = [item.body for item in sent if item.status != 200]
    with ThreadPoolExecutor(REPORTER_THREADS) as pool:
        return list(pool.map(lambda body: send_report(server, body), bodies))


def check_exactly_once(engine: sa.Engine, sent: list[Sent], retries: list[Sent]) -> None:
    assert [item for item in retries if item.status != 200] == []
    recorded = recorded_event_ids(engine)
    assert {key: count for key, count in recorded.items() if count != 1} == {}
    assert set(recorded) == {item.event_id for item in sent}


# -- the tests ------------------------------------------------------------------------------


@dataclass
class Outage:
    """When the proxy was cut and restored, and what /health said in between."""

    cut_started: float
    cut_done: float
    restore_started: float
    restored: float
    health: tuple[int | None, float, Any]


def outage(
    proxy: TcpProxy, server: ServerProcess, reporters: Reporters, *, blackhole: bool
) -> Outage:
    """Cut the proxy until reports sent after the cut were answered, asking /health; restore."""
    cut_started = time.monotonic()
    proxy.cut(blackhole=blackhole)
    cut_done = time.monotonic()
    reporters.wait_for_answers(cut_done, REPORTS_PER_PHASE * REPORTER_THREADS)
    health = timed_get(server, "/health")
    restore_started = time.monotonic()
    proxy.restore()
    return Outage(cut_started, cut_done, restore_started, time.monotonic(), health)


def check_outage(reporters: Reporters, window: Outage, recorded: Counter) -> int:
    """Reports inside the outage got 503 and wrote nothing; return how many there were."""
    inside = reporters.between(window.cut_done, window.restore_started)
    assert inside, "no report was sent during the outage"
    assert [item for item in inside if item.status != 503] == []
    assert [item.event_id for item in inside if recorded[item.event_id]] == []
    status, seconds, body = window.health
    assert status == 503, (status, seconds, body)
    return len(inside)


def check_recovered(reporters: Reporters, window: Outage, until: float) -> int:
    """Every report sent after the restore succeeded; return how many there were."""
    after = reporters.between(window.restored, until)
    assert after, "no report was sent after the restore"
    assert [item for item in after if item.status != 200] == []
    return len(after)


def test_reports_get_503_while_the_database_is_cut_and_succeed_after(
    tmp_path, workflows_dir, scratch_url, scratch_engine, proxy
):
    started = time.monotonic()
    with fault_server(tmp_path, via_proxy(scratch_url, proxy), workflows_dir) as server:
        prepare_installing_nodes(server)
        with Reporters(server) as reporters:
            phase = REPORTS_PER_PHASE * REPORTER_THREADS
            reporters.wait_for_answers(started, phase, status=200)
            reset = outage(proxy, server, reporters, blackhole=False)
            reporters.wait_for_answers(reset.restored, phase)
            blackholed = outage(proxy, server, reporters, blackhole=True)
            ended = reporters.wait_for_answers(blackholed.restored, phase)
        sent = list(reporters.sent)

        check_answers(sent)
        recorded = recorded_event_ids(scratch_engine)
        ok = [item.event_id for item in sent if item.status == 200]
        assert {event_id: recorded[event_id] for event_id in ok if recorded[event_id] != 1} == {}
        during_reset = check_outage(reporters, reset, recorded)
        during_blackhole = check_outage(reporters, blackholed, recorded)
        # Up to the moment the next cut began: a report answered while it was under way
        # may already have lost its connection.
        after_reset = check_recovered(reporters, reset, blackholed.cut_started)
        after_blackhole = check_recovered(reporters, blackholed, ended)
        # A report under way when the cut came may have committed just before its answer was
        # lost: the 503 is then ambiguous, and the client's retry (same event_id) settles it.
        ambiguous = [item for item in sent if item.status == 503 and recorded[item.event_id]]

        status, seconds, body = timed_get(server, "/health")
        assert (status, body["status"], body["database"]) == (200, "ok", "ok"), seconds
        retries = retry_unanswered(server, sent)
        check_exactly_once(scratch_engine, sent, retries)
        check_node_rows_match_events(scratch_engine)
        assert server.is_running()

    assert server.returncode == 0, server.log_tail()
    log = server.log_text()
    assert "Exception on /" not in log, server.log_tail()  # Flask's line for an unhandled 500
    assert "database unavailable" in log
    statuses = Counter(item.status for item in sent)
    print(
        f"\npg faults (proxy): {time.monotonic() - started:.1f} s, {len(sent)} reports "
        f"{dict(statuses)}, slowest {max(item.seconds for item in sent):.2f} s; "
        f"503 inside the reset outage {during_reset}, inside the blackhole {during_blackhole}; "
        f"200 after them {after_reset} and {after_blackhole}; ambiguous 503s {len(ambiguous)}; "
        f"/health during outages {reset.health[:2]} {blackholed.health[:2]}"
    )


def terminate_sessions(admin_url: str, database: str) -> int:
    """Kill every session on ``database`` and wait until they are gone; return how many."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            # In the select list, so it only runs on the rows the WHERE clause keeps.
            rows = connection.execute(
                sa.text(
                    "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).all()
            killed = [pid for pid, terminated in rows if terminated]
            # pg_terminate_backend only signals: wait until those backends have exited.
            deadline = time.monotonic() + WAIT_SECONDS
            while still_alive(connection, killed):
                assert time.monotonic() < deadline, "terminated sessions never went away"
                time.sleep(0.05)
    finally:
        engine.dispose()
    return len(killed)


def still_alive(connection: sa.Connection, pids: list[int]) -> bool:
    if not pids:
        return False
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)")
    return connection.execute(query, {"pids": pids}).scalar_one() > 0


def heartbeat(number: int, event_id: str) -> dict[str, Any]:
    return {"mac_address": mac_of(number), "event": "heartbeat", "event_id": event_id}


def test_pool_recovers_when_postgres_kills_the_servers_sessions(
    tmp_path, workflows_dir, scratch_url, scratch_engine, admin_url
):
    started = time.monotonic()
    database = make_url(scratch_url).database
    with fault_server(tmp_path, scratch_url, workflows_dir) as server:
        prepare_installing_nodes(server)
        with Reporters(server) as warming:  # fill the pool with several connections
            warming.wait_for_answers(started, REPORTS_PER_PHASE * REPORTER_THREADS)
        assert {item.status for item in warming.sent} == {200}

        # While idle: every pooled connection is dead; pre-ping must replace them.
        killed_idle = terminate_sessions(admin_url, database)
        assert killed_idle >= 1
        one_by_one = [send_report(server, heartbeat(n, f"idle-{n}")) for n in range(NODE_COUNT)]
        check_answers(one_by_one)
        failed = [item for item in one_by_one if item.status != 200]
        assert failed in ([], one_by_one[:1]), failed  # at worst the very first one
        status, _, body = timed_get(server, "/health")
        assert status == 200, body

        # Under load: reports in flight may fail; those sent a moment later must not.
        with Reporters(server) as loaded:
            phase = REPORTS_PER_PHASE * REPORTER_THREADS
            loaded.wait_for_answers(time.monotonic(), phase)
            killed_busy = terminate_sessions(admin_url, database)
            killed_at = time.monotonic()  # every killed session has exited by now
            loaded.wait_for_answers(killed_at, phase)
        check_answers(loaded.sent)
        assert [item for item in loaded.since(killed_at) if item.status != 200] == []

        sent = warming.sent + one_by_one + loaded.sent
        retries = retry_unanswered(server, sent)
        check_exactly_once(scratch_engine, sent, retries)
        check_node_rows_match_events(scratch_engine)

    assert server.returncode == 0, server.log_tail()
    assert "Exception on /" not in server.log_text(), server.log_tail()
    statuses = Counter(item.status for item in loaded.sent)
    print(
        f"\npg faults (terminate): {time.monotonic() - started:.1f} s; killed {killed_idle} idle "
        f"session(s): {len(failed)} of {len(one_by_one)} next reports failed; killed "
        f"{killed_busy} under load: {dict(statuses)}"
    )


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it is true; fail after ``WAIT_SECONDS`` (only a hang)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := condition()):
        assert time.monotonic() < deadline, f"waited {WAIT_SECONDS} s for {what}"
        time.sleep(0.05)
    return value


def skipped_sweeps(server: ServerProcess) -> int:
    """Sweeps the server has logged as skipped because the database was away."""
    return server.log_text().count("sweep skipped: database unavailable")


def node_state(engine: sa.Engine, mac: str) -> str:
    with engine.connect() as connection:
        return connection.execute(
            sa.text("SELECT state FROM nodes WHERE mac_address = :mac"), {"mac": mac}
        ).scalar_one()


def test_sweeper_carries_on_after_an_outage(
    tmp_path, workflows_dir, scratch_url, scratch_engine, proxy
):
    """Sweeps fail while the database is away; the first one after it times the node out."""
    mac = mac_of(0)
    with fault_server(
        tmp_path,
        via_proxy(scratch_url, proxy),
        workflows_dir,
        INSTALL_TIMEOUT_MINUTES=INSTALL_TIMEOUT_SECONDS / 60,
        SWEEP_INTERVAL_SECONDS=0.3,
        MAX_INSTALL_ATTEMPTS=10,
    ) as server:
        body = {"mac_address": mac, "workflow_id": WORKFLOW_ID}
        assert server.post_json("/api/v1/nodes", body).status == 201
        assert server.patch_json(f"/api/v1/nodes/{mac}/state", {"state": "pending"}).status == 200
        assert "kernel " in server.get(f"/api/v1/boot?mac={mac}").text
        install_deadline = time.monotonic() + INSTALL_TIMEOUT_SECONDS
        proxy.cut()
        # Time itself is the behaviour here: the install deadline must pass during the cut.
        wait_until(lambda: time.monotonic() > install_deadline, "the install deadline")
        skipped = skipped_sweeps(server)
        wait_until(lambda: skipped_sweeps(server) > skipped, "a sweep failing past the deadline")
        assert node_state(scratch_engine, mac) == "installing"
        proxy.restore()
        wait_until(lambda: node_state(scratch_engine, mac) == "pending", "the timeout")
        swept = finished_sweeps(server)
        wait_until(lambda: finished_sweeps(server) >= swept + 3, "three more sweeps")
        assert node_state(scratch_engine, mac) == "pending"
        with scratch_engine.connect() as connection:
            timeouts = connection.execute(
                sa.text("SELECT count(*) FROM node_events WHERE event_type = 'install_timeout'")
            ).scalar_one()
        assert timeouts == 1

    assert server.returncode == 0, server.log_tail()
    log = server.log_text()
    # An outage is expected weather for a sweeper: one warning line per failed sweep, not an
    # APScheduler "Job ... raised an exception" traceback every interval.
    failed_sweeps = log.count("raised an exception")
    first = log[log.find("raised an exception") - 200 :][:1200]
    assert failed_sweeps == 0, f"{failed_sweeps} sweep traceback(s), the first:\n{first}"
    assert "Traceback" not in log, server.log_tail()

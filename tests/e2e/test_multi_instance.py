"""End to end: two ``provisioner serve`` instances share one PostgreSQL database.

Both instances run their sweepers every 0.3 s with a 3-second install timeout. 200 nodes are
created and queued through either instance; then client threads boot them (alternating
instances) into ``installing``. Every even node is an installer that reports at once
(``install_started``, ``install_progress``, ``install_complete`` sent to *both* instances at
the same moment under one ``event_id``, ``first_boot``), every odd node stays silent and must
be timed out by whichever sweeper sees it first, exactly once. The database is then read
directly: every report is one row, every timeout is one event and one state change, and
every node ends where the rules say.
"""

import re
import threading
import time
from collections import Counter
from collections import defaultdict
from collections.abc import Callable
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import databases
import pytest
import sqlalchemy as sa
from serverproc import Response
from serverproc import ServerProcess
from serverproc import finished_sweeps
from workflowfiles import write_test_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NODE_COUNT = 200
CLIENT_THREADS = 8
SERVER_THREADS = 8
TIMEOUT_MINUTES = 0.05  # 3 seconds
TIMEOUT_SECONDS = TIMEOUT_MINUTES * 60
SWEEP_SECONDS = 0.3
#: Large enough that a timed-out node always goes back to pending, never to install_failed.
MAX_ATTEMPTS = 100
#: After the last silent node's deadline: generous, only turns a hang into a failure.
SETTLE_SECONDS = TIMEOUT_SECONDS + 60
REQUEST_TIMEOUT_SECONDS = 15
POLL_SECONDS = 0.2

WORKFLOW_ID = "multi-os"
REPORTED_SEQUENCE = ["install_started", "install_progress", "install_complete", "first_boot"]
SWEEP_LOG = re.compile(r"sweep: (\d+) stalled install\(s\) timed out")


def mac_of(number: int) -> str:
    return f"52:54:00:31:{number // 256:02x}:{number % 256:02x}"


def is_reported(number: int) -> bool:
    """Even nodes report their install; odd ones stay silent and must time out."""
    return number % 2 == 0


@pytest.fixture
def scratch_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (the servers migrate it)."""
    admin_url, reason = databases.postgres_admin_url()
    if admin_url is None:
        pytest.skip(reason)
    url = databases.create_scratch_database(admin_url)
    try:
        yield url
    finally:
        databases.drop_database(admin_url, url)


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(directory, WORKFLOW_ID)
    return directory


def server_settings(url: str, workflows_dir: Path) -> dict[str, str]:
    settings = {
        "DATABASE_URL": url,
        "WORKFLOWS_DIR": str(workflows_dir),
        "INSTALL_TIMEOUT_MINUTES": TIMEOUT_MINUTES,
        "SWEEP_INTERVAL_SECONDS": SWEEP_SECONDS,
        "MAX_INSTALL_ATTEMPTS": MAX_ATTEMPTS,
        "REPORT_AUTH": "open",
        # Two instances, each at most 12 connections: well inside max_connections = 100.
        "DATABASE_POOL_SIZE": SERVER_THREADS,
        "DATABASE_MAX_OVERFLOW": 4,
    }
    return {f"PROVISIONER_{key}": str(value) for key, value in settings.items()}


def start_both(servers: list[ServerProcess]) -> None:
    """Start the instances at the same moment: both migrate the fresh database at once."""
    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.start) for server in servers]:
            future.result()


def run_in_threads(work: Callable[[int], Any], numbers: list[int]) -> list[Any]:
    """``work(number)`` for every number, on ``CLIENT_THREADS`` threads; results in order."""
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(work, numbers))


def checked(response: Response, status: int = 200) -> Any:
    assert response.status == status, response
    return response.body


class Cluster:
    """The two instances, and every report the test sent through them."""

    def __init__(self, servers: list[ServerProcess]) -> None:
        self.servers = servers
        self.lock = threading.Lock()
        self.reports: list[tuple[str, dict, Response]] = []
        #: Reported node -> seconds from its boot request until install_complete answered.
        self.install_windows: dict[str, float] = {}

    def server(self, turn: int) -> ServerProcess:
        return self.servers[turn % len(self.servers)]

    def create_and_queue(self, number: int) -> None:
        """Create the node with the workflow on one instance, queue it on the other."""
        mac = mac_of(number)
        body = {"mac_address": mac, "workflow_id": WORKFLOW_ID}
        checked(self.server(number).post_json("/api/v1/nodes", body), 201)
        moved = self.server(number + 1).patch_json(
            f"/api/v1/nodes/{mac}/state", {"state": "pending"}
        )
        assert checked(moved)["data"]["state"] == "pending"

    def install(self, number: int) -> None:
        """Boot the node into installing; a reporting node then walks to active."""
        mac = mac_of(number)
        booting = time.monotonic()
        script = self.server(number).get(f"/api/v1/boot?mac={mac}")
        assert script.status == 200, script
        assert any(line.startswith("kernel ") for line in script.text.splitlines()), script
        if not is_reported(number):
            return
        for step, event in enumerate(REPORTED_SEQUENCE):
            body: dict[str, Any] = {
                "mac_address": mac,
                "event": event,
                "event_id": f"{mac}/{event}",
            }
            if event == "install_progress":
                body["progress"] = 50
            if event == "install_complete":
                self.report_to_all_at_once(body)
                self.install_windows[mac] = time.monotonic() - booting
            else:
                self.report(self.server(number + step + 1), body)

    def report(self, server: ServerProcess, body: dict) -> Response:
        response = server.post_json("/api/v1/report", body, timeout=REQUEST_TIMEOUT_SECONDS)
        with self.lock:
            self.reports.append((server.name, body, response))
        return response

    def report_to_all_at_once(self, body: dict) -> list[Response]:
        """Send the same report (same ``event_id``) to every instance simultaneously."""
        barrier = threading.Barrier(len(self.servers), timeout=REQUEST_TIMEOUT_SECONDS)

        def send(server: ServerProcess) -> Response:
            barrier.wait()
            return self.report(server, body)

        with ThreadPoolExecutor(len(self.servers)) as pool:
            return list(pool.map(send, self.servers))


# -- reading the shared database ------------------------------------------------------------


def query(engine: sa.Engine, sql: str) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text(sql)))


def wait_until_silent_nodes_timed_out(engine: sa.Engine, deadline: float) -> None:
    """Poll until no node is installing and every silent node has a timeout event."""
    silent = NODE_COUNT - NODE_COUNT // 2
    while True:
        (installing,) = query(engine, "SELECT count(*) FROM nodes WHERE state = 'installing'")[0]
        (timeouts,) = query(
            engine, "SELECT count(*) FROM node_events WHERE event_type = 'install_timeout'"
        )[0]
        if installing == 0 and timeouts >= silent:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"still {installing} installing, {timeouts} of {silent} timed out")
        time.sleep(POLL_SECONDS)


def wait_for_more_sweeps(servers: list[ServerProcess], count: int) -> None:
    """Wait until the instances together have finished ``count`` more sweeps (counted in
    /metrics): one of them holds the scheduler lease and sweeps, the others stand by."""

    def total() -> int:
        return sum(finished_sweeps(server) for server in servers)

    target = total() + count
    deadline = time.monotonic() + SETTLE_SECONDS
    while total() < target:
        assert time.monotonic() < deadline, "the instances stopped sweeping"
        time.sleep(POLL_SECONDS)


def state_moves(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Each node's state log as (from, to, triggered_by), oldest first, by MAC."""
    rows = query(
        engine,
        "SELECT n.mac_address, l.from_state, l.to_state, l.triggered_by "
        "FROM node_state_logs l JOIN nodes n ON n.id = l.node_id ORDER BY l.id",
    )
    moves: dict[str, list[tuple]] = defaultdict(list)
    for mac, *move in rows:
        moves[mac].append(tuple(move))
    return moves


def expected_moves(number: int) -> list[tuple]:
    queued = [(None, "discovered", "admin"), ("discovered", "pending", "admin")]
    booted = [*queued, ("pending", "installing", "boot")]
    if is_reported(number):
        return [
            *booted,
            ("installing", "installed", "node_report"),
            ("installed", "active", "node_report"),
        ]
    return [*booted, ("installing", "pending", "sweeper")]


def check_reports(cluster: Cluster, engine: sa.Engine) -> None:
    """Every report answered 200, each ``event_id`` is one row, duplicates replayed."""
    bad = [report for report in cluster.reports if report[2].status != 200]
    assert bad == [], f"{len(bad)} report(s) not answered 200, first: {bad[:3]}"
    by_event_id: dict[str, list[Response]] = defaultdict(list)
    for _, body, response in cluster.reports:
        by_event_id[body["event_id"]].append(response)
    for event_id, responses in by_event_id.items():
        first = responses[0].body
        assert all(response.body == first for response in responses), (event_id, responses)

    rows = query(
        engine,
        "SELECT client_event_id, count(*) FROM node_events "
        "WHERE client_event_id IS NOT NULL GROUP BY client_event_id",
    )
    recorded = dict(rows)
    assert {key: count for key, count in recorded.items() if count != 1} == {}
    assert set(recorded) == set(by_event_id)

    per_node_type = Counter(
        {
            (mac, event_type): count
            for mac, event_type, count in query(
                engine,
                "SELECT n.mac_address, e.event_type, count(*) FROM node_events e "
                "JOIN nodes n ON n.id = e.node_id GROUP BY 1, 2",
            )
        }
    )
    expected: Counter = Counter()
    for number in range(NODE_COUNT):
        mac = mac_of(number)
        if is_reported(number):
            expected.update({(mac, event): 1 for event in REPORTED_SEQUENCE})
        else:
            expected[(mac, "install_timeout")] = 1
    assert per_node_type == expected


def check_timeouts(engine: sa.Engine, moves: dict[str, list[tuple]]) -> None:
    """One ``install_timeout`` event per sweeper timeout, never two for one attempt."""
    events = query(
        engine,
        "SELECT n.mac_address, e.effect, e.metadata FROM node_events e "
        "JOIN nodes n ON n.id = e.node_id WHERE e.event_type = 'install_timeout'",
    )
    by_node: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for mac, effect, metadata in events:
        by_node[mac].append((effect, metadata["stalled_since"]))
    for number in range(NODE_COUNT):
        mac = mac_of(number)
        sweeper_timeouts = [
            move
            for move in moves[mac]
            if move[0] == "installing"
            and move[1] in ("pending", "install_failed")
            and move[2] == "sweeper"
        ]
        assert len(by_node[mac]) == len(sweeper_timeouts), (mac, by_node[mac], moves[mac])
        attempts = [effect for effect, _ in by_node[mac]]
        deadlines = [since for _, since in by_node[mac]]
        assert len(set(attempts)) == len(attempts), (mac, by_node[mac])
        assert len(set(deadlines)) == len(deadlines), (mac, by_node[mac])


def check_final_states(engine: sa.Engine, cluster: Cluster) -> None:
    rows = query(
        engine, "SELECT mac_address, state, install_attempts, install_timeouts FROM nodes"
    )
    nodes = {mac: (state, attempts, timeouts) for mac, state, attempts, timeouts in rows}
    assert len(nodes) == NODE_COUNT
    for number in range(NODE_COUNT):
        mac = mac_of(number)
        if is_reported(number):
            window = cluster.install_windows.get(mac)
            assert nodes[mac] == ("active", 0, 0), (mac, nodes[mac], f"installing {window} s")
        else:
            assert nodes[mac] == ("pending", 1, 1), (mac, nodes[mac])


def overlap_seconds(engine: sa.Engine) -> float:
    """How long sweepers were timing out nodes while reports were still being recorded."""
    ((first_timeout, last_report),) = query(
        engine,
        "SELECT min(created_at) FILTER (WHERE event_type = 'install_timeout'), "
        "max(created_at) FILTER (WHERE event_type <> 'install_timeout') FROM node_events",
    )
    return max(0.0, (last_report - first_timeout).total_seconds())


def swept_per_instance(servers: list[ServerProcess]) -> dict[str, int]:
    """How many timeouts each instance's sweeper logged."""
    return {
        server.name: sum(int(count) for count in SWEEP_LOG.findall(server.log_text()))
        for server in servers
    }


def test_two_instances_record_each_report_and_each_timeout_once(
    tmp_path, workflows_dir, scratch_url
):
    started = time.monotonic()
    settings = server_settings(scratch_url, workflows_dir)
    servers = [
        ServerProcess(settings, tmp_path, name=name, threads=SERVER_THREADS)
        for name in ("instance-a", "instance-b")
    ]
    engine = sa.create_engine(scratch_url, poolclass=sa.pool.NullPool)
    cluster = Cluster(servers)
    try:
        start_both(servers)
        run_in_threads(cluster.create_and_queue, list(range(NODE_COUNT)))
        installing = time.monotonic()
        run_in_threads(cluster.install, list(range(NODE_COUNT)))
        install_seconds = time.monotonic() - installing
        wait_until_silent_nodes_timed_out(engine, time.monotonic() + SETTLE_SECONDS)
        wait_for_more_sweeps(servers, 3)  # nothing may be timed out twice

        check_reports(cluster, engine)
        moves = state_moves(engine)
        wrong = {
            mac_of(number): (moves.get(mac_of(number)), expected_moves(number))
            for number in range(NODE_COUNT)
            if moves.get(mac_of(number)) != expected_moves(number)
        }
        assert wrong == {}, f"{len(wrong)} node(s) moved otherwise (got, expected)"
        assert len(moves) == NODE_COUNT
        overlap = overlap_seconds(engine)
        check_timeouts(engine, moves)
        check_final_states(engine, cluster)
    finally:
        exit_codes = [server.stop() for server in servers]
        engine.dispose()

    assert exit_codes == [0, 0], [server.log_tail() for server in servers]
    swept = swept_per_instance(servers)
    assert sum(swept.values()) == NODE_COUNT - NODE_COUNT // 2, swept
    for server in servers:
        log = server.log_text()
        assert "Traceback" not in log, server.log_tail()
        assert "database unavailable" not in log, server.log_tail()
    elapsed = time.monotonic() - started
    print(
        f"\nmulti-instance: {elapsed:.1f} s in all, {install_seconds:.1f} s to boot and report, "
        f"{len(cluster.reports)} reports, timeouts swept per instance {swept}, "
        f"sweeps and reports overlapped for {overlap:.1f} s, "
        f"longest install window {max(cluster.install_windows.values()):.2f} s"
    )

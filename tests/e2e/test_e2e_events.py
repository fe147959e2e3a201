"""End to end: node reports against ``provisioner serve`` over real HTTP.

Eight clients report at once for twenty installing nodes (two of them racing to complete the
same node), and nothing is lost, nothing 5xx, no transition applied twice. Then real ``curl``,
run the way an installer script runs it, walks one node from boot to active and another
through three failed installs, with the events API checked after every step. Each test
runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

import http.client
import json
import os
import random
import shlex
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import dbcheck
import pytest
from serverproc import ServerProcess
from serverproc import start_server
from workflowfiles import write_test_workflow

pytestmark = pytest.mark.e2e

WORKFLOW_ID = "e2e-os"

THREADS = 8
REPORTS_PER_THREAD = 200
NODE_COUNT = 20
#: Threads 2p and 2p+1 send ``install_complete`` for node p at the same moment.
RACE_NODES = THREADS // 2
#: Where in each thread's run the race happens, and where the lone completions go.
RACE_AT = 100
SOLO_COMPLETE_AT = 150
#: Nodes RACE_NODES .. RACE_NODES + SOLO_NODES - 1 get one ``install_complete`` each.
SOLO_NODES = 4
RANDOM_EVENTS = ["install_progress"] * 5 + ["heartbeat"] * 3 + ["boot_started"] * 2
#: Generous: only turns hung reporter threads into a failure (speed: make bench).
REPORTERS_DEADLINE_SECONDS = 120
#: These tests are about the event log, not report authentication: reports need no token.
#: (A server without the REPORT_AUTH setting ignores the variable.)
OPEN_REPORTS = {"REPORT_AUTH": "open"}
REQUEST_TIMEOUT_SECONDS = 30
#: curl honours these; a loopback request to the test server must not go through a proxy.
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"}


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(
        directory,
        WORKFLOW_ID,
        description="A workflow the event end-to-end tests install",
        initrd_path="/files/e2e-os/initrd.img",
        cmdline="console=ttyS0 ip=dhcp node=${node_id} url=${server}/api/v1/report",
    )
    return directory


def mac_of(number: int) -> str:
    return f"52:54:00:e7:{number // 256:02x}:{number % 256:02x}"


def node(server: ServerProcess, ref: str) -> dict:
    status, _, body = server.get(f"/api/v1/nodes/{ref}")
    assert status == 200, body
    return body["data"]


def events(server: ServerProcess, ref: str, **query: Any) -> dict:
    """The events API answer for one node: ``data`` newest first, and ``total``."""
    query = {"limit": 500} | query
    status, _, body = server.get(f"/api/v1/nodes/{ref}/events?{urlencode(query)}")
    assert status == 200, body
    return body


def assign_and_queue(server: ServerProcess, mac: str) -> None:
    """Give a discovered node the workflow and send it to pending, as an operator would."""
    status, _, body = server.patch_json(f"/api/v1/nodes/{mac}", {"workflow_id": WORKFLOW_ID})
    assert status == 200, body
    status, _, body = server.patch_json(f"/api/v1/nodes/{mac}/state", {"state": "pending"})
    assert status == 200, body


def register_installing(server: ServerProcess, number: int) -> bool:
    """Bring node ``number`` to installing; even ones are discovered by a boot (True)."""
    mac = mac_of(number)
    discovered_by_boot = number % 2 == 0
    if discovered_by_boot:
        assert server.get(f"/api/v1/boot?mac={mac}").status == 200
    else:
        status, _, body = server.post_json("/api/v1/nodes", {"mac_address": mac})
        assert status == 201, body
    assign_and_queue(server, mac)
    response = server.get(f"/api/v1/boot?mac={mac}")
    assert response.status == 200, response
    assert node(server, mac)["state"] == "installing"
    return discovered_by_boot


# -- many reporters at once -----------------------------------------------------------------


def thread_plan(index: int) -> list[dict[str, Any]]:
    """The report bodies thread ``index`` sends, in order (seeded, so every run is alike)."""
    rng = random.Random(index)
    plan = []
    for _ in range(REPORTS_PER_THREAD):
        event = rng.choice(RANDOM_EVENTS)
        body: dict[str, Any] = {"mac_address": mac_of(rng.randrange(NODE_COUNT)), "event": event}
        if event == "install_progress":
            body["progress"] = rng.randrange(101)
        plan.append(body)
    plan[RACE_AT] = {"mac_address": mac_of(index // 2), "event": "install_complete"}
    if index < SOLO_NODES:
        plan[SOLO_COMPLETE_AT] = {
            "mac_address": mac_of(RACE_NODES + index),
            "event": "install_complete",
        }
    return plan


class Reporter(threading.Thread):
    """Send a plan of reports over one persistent connection; keep every answer."""

    def __init__(
        self,
        server: ServerProcess,
        plan: list[dict],
        starting: threading.Barrier,
        race: threading.Barrier,
    ) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.plan = plan
        self.starting = starting
        self.race = race
        self.answers: list[tuple[dict, int, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        connection = http.client.HTTPConnection(
            self.server.host, self.server.port, timeout=REQUEST_TIMEOUT_SECONDS
        )
        try:
            self.starting.wait()
            for position, body in enumerate(self.plan):
                if position == RACE_AT:
                    self.race.wait()
                self.answers.append((body, *self.send(connection, body)))
        except Exception as exc:  # kept for the test to report, not lost in the thread
            self.error = exc
            self.starting.abort()
            self.race.abort()
        finally:
            connection.close()

    @staticmethod
    def send(connection: http.client.HTTPConnection, body: dict) -> tuple[int, Any]:
        connection.request(
            "POST",
            "/api/v1/report",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        raw = answer.read()
        try:
            return answer.status, json.loads(raw)
        except ValueError:
            return answer.status, raw


@pytest.mark.slow
def test_concurrent_reports_lose_nothing_and_apply_each_transition_once(
    tmp_path, workflows_dir, database_url
):
    started = time.monotonic()
    # Heartbeat pruning off, so every report sent must still be a row at the end.
    with start_server(
        tmp_path,
        database_url=database_url,
        WORKFLOWS_DIR=workflows_dir,
        HEARTBEAT_KEEP_PER_NODE=0,
        **OPEN_REPORTS,
    ) as server:
        booted = [number for number in range(NODE_COUNT) if register_installing(server, number)]

        starting = threading.Barrier(THREADS, timeout=REQUEST_TIMEOUT_SECONDS)
        races = [threading.Barrier(2, timeout=REQUEST_TIMEOUT_SECONDS) for _ in range(RACE_NODES)]
        reporters = [
            Reporter(server, thread_plan(index), starting, races[index // 2])
            for index in range(THREADS)
        ]
        reporting = time.monotonic()
        for reporter in reporters:
            reporter.start()
        for reporter in reporters:
            reporter.join(REPORTERS_DEADLINE_SECONDS)
        report_seconds = time.monotonic() - reporting
        assert not [reporter for reporter in reporters if reporter.is_alive()], "reporters hung"
        assert [reporter.error for reporter in reporters] == [None] * THREADS

        answers = [answer for reporter in reporters for answer in reporter.answers]
        assert len(answers) == THREADS * REPORTS_PER_THREAD
        bad = [(body, status, reply) for body, status, reply in answers if status != 200]
        assert bad == [], f"{len(bad)} report(s) not answered 200, first: {bad[:3]}"

        sent = Counter(body["mac_address"] for body, _, _ in answers)
        for number in range(NODE_COUNT):
            mac = mac_of(number)
            expected = sent[mac] + (1 if number in booted else 0)
            assert events(server, mac, limit=1)["total"] == expected, mac

        for number in range(RACE_NODES):
            mac = mac_of(number)
            messages = sorted(
                reply["message"]
                for body, _, reply in answers
                if body == {"mac_address": mac, "event": "install_complete"}
            )
            assert len(messages) == 2, messages
            assert "ignored: node is installed" in messages[0], messages
            assert messages[1] == "Installation completed"
            completes = events(server, mac, event_type="install_complete")
            assert completes["total"] == 2
            effects = sorted(event["effect"] for event in completes["data"])
            assert effects == ["ignored: node is installed", "installing→installed"]
            status, _, history = server.get(f"/api/v1/nodes/{mac}/history")
            assert status == 200, history
            moves = [(entry["from_state"], entry["to_state"]) for entry in history["data"]]
            assert moves.count(("installing", "installed")) == 1, moves
            assert node(server, mac)["state"] == "installed"

        for number in range(RACE_NODES, RACE_NODES + SOLO_NODES):
            assert node(server, mac_of(number))["state"] == "installed"
        for number in range(RACE_NODES + SOLO_NODES, NODE_COUNT):
            assert node(server, mac_of(number))["state"] == "installing"

        exit_code = server.stop()
    assert exit_code == 0, server.log_tail()
    log = server.log_text()
    assert "database is locked" not in log
    assert "Traceback" not in log, server.log_tail()

    by_type = dict(
        dbcheck.rows(database_url, "SELECT event_type, count(*) FROM node_events GROUP BY 1")
    )
    expected = Counter(body["event"] for body, _, _ in answers)
    expected["discovered"] = len(booted)
    assert by_type == dict(expected)
    assert sum(by_type.values()) == THREADS * REPORTS_PER_THREAD + len(booted)
    installed_logs = dbcheck.rows(
        database_url,
        "SELECT node_id, count(*) FROM node_state_logs "
        "WHERE from_state = 'installing' AND to_state = 'installed' GROUP BY 1",
    )
    assert sorted(count for _, count in installed_logs) == [1] * (RACE_NODES + SOLO_NODES)

    elapsed = time.monotonic() - started
    print(
        f"\n{len(answers)} reports from {THREADS} threads in {report_seconds:.1f} s "
        f"({len(answers) / report_seconds:.0f}/s); whole test {elapsed:.1f} s"
    )


# -- an installer script's curl ---------------------------------------------------------------


def curl(command_line: str) -> str:
    """Run a curl command line through the shell, as an installer script would; its stdout."""
    env = {key: value for key, value in os.environ.items() if key not in PROXY_VARIABLES}
    result = subprocess.run(
        command_line,
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, (command_line, result.stderr)
    return result.stdout


def curl_boot(server: ServerProcess, mac: str) -> list[str]:
    """Fetch the iPXE script for ``mac`` the way iPXE's chain would, with curl."""
    lines = curl(f"curl -fsS {shlex.quote(f'{server.url}/api/v1/boot?mac={mac}')}").splitlines()
    assert lines[0] == "#!ipxe", lines
    return lines


def lines_end_with_exit(lines: list[str]) -> bool:
    """The script boots locally (no installer)."""
    return lines[-1] == "exit" and not any(line.startswith("kernel ") for line in lines)


def curl_report(server: ServerProcess, body: dict[str, Any]) -> dict:
    """``POST /api/v1/report`` with curl; the parsed answer, checked to be a success."""
    command_line = (
        "curl -fsS -X POST -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body))} {server.url}/api/v1/report"
    )
    answer = json.loads(curl(command_line))
    assert answer["success"] is True, answer
    assert answer["data"]["mac_address"] == body["mac_address"], answer
    return answer


def assert_newest_event(server: ServerProcess, mac: str, total: int, **expected: Any) -> dict:
    """The node has ``total`` events and the newest one has the ``expected`` fields."""
    page = events(server, mac)
    assert page["total"] == total, page
    assert len(page["data"]) == total
    newest = page["data"][0]
    assert {key: newest[key] for key in expected} == expected, newest
    assert newest["ip_address"] == "127.0.0.1"
    return newest


@pytest.fixture
def curl_needed() -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed: this test runs the installer's real curl commands")


def test_curl_drives_a_node_from_boot_to_active(
    tmp_path, workflows_dir, database_url, curl_needed
):
    mac = mac_of(1000)
    with start_server(
        tmp_path, database_url=database_url, WORKFLOWS_DIR=workflows_dir, **OPEN_REPORTS
    ) as server:
        assert lines_end_with_exit(curl_boot(server, mac))
        assert node(server, mac)["state"] == "discovered"
        assert_newest_event(server, mac, 1, event_type="discovered")
        assign_and_queue(server, mac)
        lines = curl_boot(server, mac)
        assert any(line.startswith("kernel ") for line in lines), lines
        assert node(server, mac)["state"] == "installing"

        answer = curl_report(server, {"mac_address": mac, "event": "install_started"})
        assert answer["message"] == "Installation started"
        assert answer["data"]["state"] == "installing"
        assert_newest_event(server, mac, 2, event_type="install_started", status="success")

        for step, percent in enumerate(range(10, 100, 10), start=1):
            body = {"mac_address": mac, "event": "install_progress", "progress": percent}
            answer = curl_report(server, body | {"status": "in_progress"})
            assert answer["message"] == f"Installation progress: {percent}%"
            assert answer["data"]["progress"] == percent
            assert_newest_event(
                server,
                mac,
                2 + step,
                event_type="install_progress",
                status="in_progress",
                progress=percent,
                effect=f"progress {percent}%",
            )
            current = node(server, mac)
            assert (current["state"], current["progress"]) == ("installing", percent)
            assert current["last_event"]["type"] == "install_progress"

        answer = curl_report(server, {"mac_address": mac, "event": "install_complete"})
        assert answer["message"] == "Installation completed"
        assert (answer["data"]["state"], answer["data"]["progress"]) == ("installed", 100)
        assert_newest_event(
            server, mac, 12, event_type="install_complete", effect="installing→installed"
        )
        assert node(server, mac)["state"] == "installed"

        first_boot = {
            "mac_address": mac,
            "event": "first_boot",
            "hostname": "node-e2e-curl",
            "event_metadata": {"os_version": "E2E OS 1.0", "kernel": "6.1.0-e2e"},
        }
        answer = curl_report(server, first_boot)
        assert answer["message"] == "First boot - node now active"
        assert answer["data"]["state"] == "active"
        assert answer["data"]["hostname"] == "node-e2e-curl"
        assert_newest_event(
            server,
            mac,
            13,
            event_type="first_boot",
            effect="installed→active",
            metadata=first_boot["event_metadata"],
        )
        active = node(server, mac)
        assert active["state"] == "active"
        assert active["last_event"]["type"] == "first_boot"

        page = events(server, mac)
        assert [event["event_type"] for event in reversed(page["data"])] == [
            "discovered",
            "install_started",
            *["install_progress"] * 9,
            "install_complete",
            "first_boot",
        ]
        status, _, history = server.get(f"/api/v1/nodes/{mac}/history")
        assert status == 200, history
        assert [(entry["from_state"], entry["to_state"]) for entry in history["data"]] == [
            (None, "discovered"),
            ("discovered", "pending"),
            ("pending", "installing"),
            ("installing", "installed"),
            ("installed", "active"),
        ]
        assert history["data"][-1]["metadata"] == first_boot["event_metadata"]


def test_curl_reports_three_failed_installs(tmp_path, workflows_dir, database_url, curl_needed):
    mac = mac_of(1001)
    with start_server(
        tmp_path,
        database_url=database_url,
        WORKFLOWS_DIR=workflows_dir,
        MAX_INSTALL_ATTEMPTS=3,
        **OPEN_REPORTS,
    ) as server:
        curl_boot(server, mac)
        assign_and_queue(server, mac)
        total = 1  # the discovered event
        outcomes = [
            ("pending", "Installation failed (attempt 1), will retry"),
            ("pending", "Installation failed (attempt 2), will retry"),
            ("install_failed", "Installation failed after 3 attempts"),
        ]
        for attempt, (state, message) in enumerate(outcomes, start=1):
            lines = curl_boot(server, mac)
            assert any(line.startswith("kernel ") for line in lines), lines
            assert node(server, mac)["state"] == "installing"

            error = f"disk /dev/sda not found (try {attempt})"
            answer = curl_report(
                server, {"mac_address": mac, "event": "install_failed", "message": error}
            )
            total += 1
            assert answer["message"] == message
            assert answer["data"]["state"] == state
            assert answer["data"]["install_attempts"] == attempt
            assert_newest_event(
                server,
                mac,
                total,
                event_type="install_failed",
                status="failed",
                message=error,
                effect=f"installing→{state} (attempt {attempt} of 3)",
            )
            failed = node(server, mac)
            assert (failed["state"], failed["install_attempts"]) == (state, attempt)
            assert failed["last_install_error"] == error
            assert failed["last_event"] == {
                "type": "install_failed",
                "status": "failed",
                "at": failed["last_event"]["at"],
            }

        assert lines_end_with_exit(curl_boot(server, mac))
        assert node(server, mac)["state"] == "install_failed"
        status, _, history = server.get(f"/api/v1/nodes/{mac}/history")
        assert status == 200, history
        moves = [(entry["from_state"], entry["to_state"]) for entry in history["data"]]
        assert moves[2:] == [
            ("pending", "installing"),
            ("installing", "pending"),
            ("pending", "installing"),
            ("installing", "pending"),
            ("pending", "installing"),
            ("installing", "install_failed"),
        ]

"""End to end: the real scheduler inside ``provisioner serve`` times out a silent install.

A node is booted into ``installing`` and then says nothing. With a 3-second timeout and a
sweep every half second the server must notice on its own: an ``install_timeout`` event, the
node back in ``pending`` and listed in the stalled feed; after the third timeout it is
``install_failed``. Polling here waits for a real background job, not for a fake clock.
It runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

import time
from datetime import datetime
from pathlib import Path

import pytest
from serverproc import ServerProcess
from serverproc import finished_sweeps
from serverproc import start_server
from workflowfiles import write_test_workflow

pytestmark = pytest.mark.e2e

TIMEOUT_MINUTES = 0.05  # 3 seconds
TIMEOUT_SECONDS = TIMEOUT_MINUTES * 60
SWEEP_SECONDS = 0.5
MAX_ATTEMPTS = 3
#: Generous: only turns a hang into a failure (how soon a timeout is noticed is not asserted).
WAIT_SECONDS = TIMEOUT_SECONDS + 60.0
POLL_SECONDS = 0.1

MAC = "52:54:00:5a:11:01"
WORKFLOW_ID = "stall-os"


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(directory, WORKFLOW_ID)
    return directory


def ok(response, status: int = 200) -> dict:
    """The JSON body of ``response`` after checking its status."""
    assert response.status == status, response
    return response.body


def node(server: ServerProcess) -> dict:
    return ok(server.get(f"/api/v1/nodes/{MAC}"))["data"]


def timeout_events(server: ServerProcess) -> list[dict]:
    """The node's ``install_timeout`` events, oldest first."""
    body = ok(server.get(f"/api/v1/nodes/{MAC}/events?event_type=install_timeout"))
    assert body["total"] == len(body["data"]), body
    return body["data"][::-1]


def history(server: ServerProcess) -> list[dict]:
    return ok(server.get(f"/api/v1/nodes/{MAC}/history"))["data"]


def stalled_feed(server: ServerProcess) -> dict:
    body = ok(server.get("/api/v1/nodes/stalled"))
    assert body["success"] is True, body
    assert body["timeout_minutes"] == TIMEOUT_MINUTES, body
    return body


def boot_into_installing(server: ServerProcess) -> datetime:
    """PXE-boot the node, check it got the installer, and return when it entered installing."""
    response = server.get(f"/api/v1/boot?mac={MAC}")
    assert response.status == 200, response
    lines = response.text.splitlines()
    assert lines[0] == "#!ipxe", response.text
    assert any(line.startswith("kernel ") for line in lines), response.text
    installing = node(server)
    assert installing["state"] == "installing", installing
    return datetime.fromisoformat(installing["state_changed_at"])


def wait_for_timeouts(server: ServerProcess, count: int) -> list[dict]:
    """Poll until the node has ``count`` install_timeout events; fail after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        events = timeout_events(server)
        if len(events) >= count:
            return events
        if time.monotonic() > deadline:
            pytest.fail(
                f"no timeout #{count} within {WAIT_SECONDS:g} s (have {len(events)}); "
                f"node {node(server)}\nlog:\n{server.log_tail()}"
            )
        time.sleep(POLL_SECONDS)


def check_timeout(event: dict, entered_installing: datetime, attempt: int) -> None:
    """The event is the sweeper's, recorded no earlier than the deadline."""
    assert event["status"] == "failed", event
    assert event["message"] == f"Installation timed out after {TIMEOUT_MINUTES:g} minutes"
    assert event["metadata"]["reason"] == "install_timeout", event
    target = "pending" if attempt < MAX_ATTEMPTS else "install_failed"
    assert event["effect"] == f"installing→{target} (attempt {attempt} of {MAX_ATTEMPTS})"
    late = (datetime.fromisoformat(event["created_at"]) - entered_installing).total_seconds()
    assert late >= TIMEOUT_SECONDS, late


def check_listed(server: ServerProcess, timeouts: int) -> dict:
    """The node is the one item of the stalled feed, for an install timeout."""
    feed = stalled_feed(server)
    assert feed["total"] == 1, feed
    (item,) = feed["data"]
    assert (item["mac_address"], item["reason"]) == (MAC, "install_timeout"), item
    assert item["timeouts"] == timeouts, item
    assert item["max_install_attempts"] == MAX_ATTEMPTS, item
    assert item["elapsed_seconds"] >= 0, item
    return item


def test_silent_install_times_out_three_times_then_fails(tmp_path, workflows_dir, database_url):
    with start_server(
        tmp_path,
        database_url=database_url,
        WORKFLOWS_DIR=workflows_dir,
        INSTALL_TIMEOUT_MINUTES=TIMEOUT_MINUTES,
        SWEEP_INTERVAL_SECONDS=SWEEP_SECONDS,
        MAX_INSTALL_ATTEMPTS=MAX_ATTEMPTS,
    ) as server:
        assert "scheduler started" in server.log_text(), server.log_tail()
        created = ok(
            server.post_json("/api/v1/nodes", {"mac_address": MAC, "workflow_id": WORKFLOW_ID}),
            201,
        )["data"]
        assert created["state"] == "discovered"
        ok(server.patch_json(f"/api/v1/nodes/{MAC}/state", {"state": "pending"}))
        assert stalled_feed(server)["data"] == []

        for attempt in range(1, MAX_ATTEMPTS + 1):
            entered = boot_into_installing(server)
            if attempt > 1:  # the episode has timed out before: still listed while retrying
                assert check_listed(server, timeouts=attempt - 1)["state"] == "installing"
            events = wait_for_timeouts(server, attempt)
            assert len(events) == attempt, events
            check_timeout(events[-1], entered, attempt)

            after = node(server)
            expected = "pending" if attempt < MAX_ATTEMPTS else "install_failed"
            assert after["state"] == expected, after
            assert after["install_attempts"] == attempt, after
            assert after["last_install_error"] == events[-1]["message"], after
            item = check_listed(server, timeouts=attempt)
            assert item["state"] == expected, item
            assert item["install_attempts"] == attempt, item

        # Nothing more happens to a failed node, however many sweeps run.
        swept = finished_sweeps(server)
        deadline = time.monotonic() + WAIT_SECONDS
        while finished_sweeps(server) < swept + 3:
            assert time.monotonic() < deadline, "the scheduler stopped sweeping"
            time.sleep(POLL_SECONDS)
        assert len(timeout_events(server)) == MAX_ATTEMPTS
        assert node(server)["state"] == "install_failed"
        check_listed(server, timeouts=MAX_ATTEMPTS)

        moves = [
            (entry["from_state"], entry["to_state"], entry["triggered_by"])
            for entry in history(server)
        ]
        assert moves == [
            (None, "discovered", "admin"),
            ("discovered", "pending", "admin"),
            ("pending", "installing", "boot"),
            ("installing", "pending", "sweeper"),
            ("pending", "installing", "boot"),
            ("installing", "pending", "sweeper"),
            ("pending", "installing", "boot"),
            ("installing", "install_failed", "sweeper"),
        ]

        # A failed node's boot prints why and goes to the local disk; no installer.
        response = server.get(f"/api/v1/boot?mac={MAC}")
        assert response.status == 200, response
        assert "kernel" not in response.text, response.text
        assert "failed to install" in response.text, response.text

        log_text = server.log_text()
        assert "sweep: 1 stalled install(s) timed out (1 retried, 0 failed)" in log_text
        assert "sweep: 1 stalled install(s) timed out (0 retried, 1 failed)" in log_text

        assert server.is_running()
        # SIGTERM, with the scheduler running; a stop that hangs is killed (exit code -9).
        exit_code = server.stop(timeout=WAIT_SECONDS)
    assert exit_code == 0, server.log_tail()
    log_text = server.log_text()
    assert "provisioner: stopped" in log_text, server.log_tail()
    assert "Traceback" not in log_text, server.log_tail()

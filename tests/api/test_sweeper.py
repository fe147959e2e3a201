"""Stalled installs: the timeout and silence rules, the sweep, boot-time detection and the CLI."""

import itertools
import math
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import insert
from sqlalchemy import select
from sqlalchemy.orm import Session
from workflowfiles import write_test_workflow

from provisioner.domain import sweeper
from provisioner.domain.lifecycle import ConcurrentTransition
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import handle_stall
from provisioner.domain.sweeper import stall_of
from provisioner.domain.sweeper import stalled_condition
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import utcnow

TIMEOUT = 30
MAX_ATTEMPTS = 3
INSTALLER_LINE = "kernel http://prov.test:8080/files/vmlinuz"
_macs = itertools.count(1)


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """A 30-minute timeout and three attempts, plus whatever a test parametrizes."""
    app_config.update(
        INSTALL_TIMEOUT_MINUTES=TIMEOUT,
        INSTALL_SILENCE_MINUTES=0,
        MAX_INSTALL_ATTEMPTS=MAX_ATTEMPTS,
    )
    app_config.update(getattr(request, "param", {}))
    return app_config


def settings(**values):
    """Build this test's app with ``values`` on top of the module's settings."""
    return pytest.mark.parametrize("app_config", [values], indirect=True, ids=["settings"])


def new_mac() -> str:
    number = next(_macs)
    return f"52:54:00:10:{number // 256:02x}:{number % 256:02x}"


def boot(client, mac: str):
    """Ask what to boot, as iPXE would; return the script's lines."""
    response = client.get("/api/v1/boot", query_string={"mac": mac})
    assert response.status_code == 200
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "#!ipxe"
    return lines


def boot_token(client, mac: str) -> str:
    """Boot a pending node and return the report token its installer was given."""
    [kernel] = [line for line in boot(client, mac) if line.startswith("kernel ")]
    return kernel.split("token=", 1)[1].split()[0]


def report(client, mac: str, event: str, **body) -> dict:
    response = client.post("/api/v1/report", json={"mac_address": mac, "event": event, **body})
    assert response.status_code == 200, response.json
    return response.json["data"]


def installing_node(client) -> tuple[str, str]:
    """A node with the test workflow that an operator queued and that booted the installer."""
    mac = new_mac()
    response = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": "test-os"})
    assert response.status_code == 201, response.json
    node_id = response.json["data"]["id"]
    response = client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": "pending"})
    assert response.status_code == 200, response.json
    assert any(line.startswith(INSTALLER_LINE) for line in boot(client, mac))
    assert get_node(client, node_id)["state"] == "installing"
    return node_id, mac


def get_node(client, node_id: str) -> dict:
    response = client.get(f"/api/v1/nodes/{node_id}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def events(client, node_id: str, event_type: str | None = None) -> list[dict]:
    """The node's events, newest first."""
    query = {"limit": 500, **({"event_type": event_type} if event_type else {})}
    response = client.get(f"/api/v1/nodes/{node_id}/events", query_string=query)
    assert response.status_code == 200, response.json
    return response.json["data"]


def history(client, node_id: str) -> list[dict]:
    """The node's state log, oldest first."""
    response = client.get(f"/api/v1/nodes/{node_id}/history")
    assert response.status_code == 200, response.json
    return response.json["data"]


def sweep(app, clock) -> sweeper.SweepResult:
    """One sweep at the clock's time, with the app's rules."""
    with app.app_context():
        return sweep_stalled_installs(db.session, StallRules.from_config(app.config), clock())


def count_events(app, event_type: str) -> int:
    with app.app_context():
        return db.session.scalar(
            select(func.count()).select_from(NodeEvent).where(NodeEvent.event_type == event_type)
        )


# -- the rule -----------------------------------------------------------------------------


def test_not_stalled_just_before_the_deadline(app, client, clock):
    """One second before state_changed_at + timeout the install is left alone."""
    node_id, _ = installing_node(client)
    clock.advance(minutes=TIMEOUT, seconds=-1)

    result = sweep(app, clock)

    assert result.timed_out == 0
    assert get_node(client, node_id)["state"] == "installing"
    assert events(client, node_id, "install_timeout") == []


def test_stalled_at_the_deadline(app, client, clock):
    """At exactly state_changed_at + timeout the install is stalled and timed out."""
    node_id, _ = installing_node(client)
    clock.advance(minutes=TIMEOUT)

    result = sweep(app, clock)

    assert (result.timed_out, result.retried, result.failed) == (1, 1, 0)
    assert get_node(client, node_id)["state"] == "pending"


def test_stall_of_and_stalled_condition_agree_at_the_boundary(app, client, clock):
    """The per-node rule and its SQL form both flip at the deadline, not a moment earlier."""
    node_id, _ = installing_node(client)
    rules = StallRules(timeout_minutes=TIMEOUT)
    deadline = clock() + timedelta(minutes=TIMEOUT)
    with app.app_context():
        node = db.session.get(Node, node_id)
        for moment, expected in ((deadline - timedelta(microseconds=1), False), (deadline, True)):
            found = db.session.scalars(
                select(Node.id).where(stalled_condition(rules, moment))
            ).all()
            assert (stall_of(node, rules, moment) is not None) is expected
            assert (found == [node_id]) is expected
        stall = stall_of(node, rules, deadline)
        assert (stall.reason, stall.since) == ("install_timeout", deadline)


# -- retries and failure ------------------------------------------------------------------


def test_timeout_retries_to_pending(app, client, clock):
    """A timeout counts an attempt, records install_timeout and logs the sweeper's move."""
    node_id, _ = installing_node(client)
    clock.advance(minutes=TIMEOUT)

    sweep(app, clock)

    node = get_node(client, node_id)
    message = f"Installation timed out after {TIMEOUT} minutes"
    assert (node["state"], node["install_attempts"]) == ("pending", 1)
    assert node["last_install_error"] == message
    assert node["last_event"]["type"] == "install_timeout"
    [event] = events(client, node_id, "install_timeout")
    assert (event["status"], event["message"]) == ("failed", message)
    assert event["metadata"]["reason"] == "install_timeout"
    assert event["created_at"] == clock().isoformat()
    entry = history(client, node_id)[-1]
    assert (entry["from_state"], entry["to_state"]) == ("installing", "pending")
    assert entry["triggered_by"] == "sweeper"
    assert message in entry["comment"]


def test_retried_node_gets_the_installer_on_next_boot(app, client, clock):
    """After a timeout the next PXE boot serves the installer again and restarts the clock."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT)
    sweep(app, clock)
    clock.advance(minutes=1)

    lines = boot(client, mac)

    assert any(line.startswith(INSTALLER_LINE) for line in lines)
    node = get_node(client, node_id)
    assert (node["state"], node["install_attempts"]) == ("installing", 1)
    assert node["state_changed_at"] == clock().isoformat()
    entry = history(client, node_id)[-1]
    assert (entry["from_state"], entry["to_state"], entry["triggered_by"]) == (
        "pending",
        "installing",
        "boot",
    )
    clock.advance(minutes=TIMEOUT, seconds=-1)
    assert sweep(app, clock).timed_out == 0


def test_install_failed_after_max_attempts(app, client, clock):
    """The MAX_INSTALL_ATTEMPTS-th timeout leaves the node install_failed, not pending."""
    node_id, mac = installing_node(client)
    outcomes = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if attempt > 1:
            assert any(line.startswith(INSTALLER_LINE) for line in boot(client, mac))
        clock.advance(minutes=TIMEOUT)
        result = sweep(app, clock)
        outcomes.append((result.retried, result.failed, get_node(client, node_id)["state"]))

    assert outcomes == [(1, 0, "pending"), (1, 0, "pending"), (0, 1, "install_failed")]
    node = get_node(client, node_id)
    assert node["install_attempts"] == MAX_ATTEMPTS
    assert len(events(client, node_id, "install_timeout")) == MAX_ATTEMPTS
    assert history(client, node_id)[-1]["triggered_by"] == "sweeper"
    lines = boot(client, mac)
    assert not any(line.startswith("kernel") for line in lines)
    assert any("failed to install" in line for line in lines)


# -- silence ------------------------------------------------------------------------------


@settings(INSTALL_SILENCE_MINUTES=10)
def test_silence_stalls_an_install_that_sends_nothing(app, client, clock):
    """No event for INSTALL_SILENCE_MINUTES while installing times the install out early."""
    node_id, _ = installing_node(client)
    clock.advance(minutes=10, seconds=-1)
    assert sweep(app, clock).timed_out == 0
    clock.advance(seconds=1)

    assert sweep(app, clock).timed_out == 1

    [event] = events(client, node_id, "install_timeout")
    assert event["message"] == "No report from the installer for 10 minutes"
    assert event["metadata"]["reason"] == "install_silence"
    assert get_node(client, node_id)["state"] == "pending"


@settings(INSTALL_SILENCE_MINUTES=10)
def test_progress_resets_the_silence_clock_but_not_the_timeout(app, client, clock):
    """Progress every 8 minutes keeps silence away, yet the 30-minute timeout still fires."""
    node_id, mac = installing_node(client)
    for percent in (20, 40, 60):
        clock.advance(minutes=8)
        assert sweep(app, clock).timed_out == 0
        report(client, mac, "install_progress", progress=percent)
    clock.advance(minutes=5, seconds=59)  # 29:59 in; last report 5:59 ago
    assert sweep(app, clock).timed_out == 0
    clock.advance(seconds=1)

    assert sweep(app, clock).timed_out == 1

    [event] = events(client, node_id, "install_timeout")
    assert event["metadata"]["reason"] == "install_timeout"
    assert event["message"] == f"Installation timed out after {TIMEOUT} minutes"


@settings(INSTALL_SILENCE_MINUTES=10, REPORT_AUTH="token")
def test_stale_reports_do_not_reset_the_silence_clock(app, client, clock, workflows_dir):
    """A report from the timed-out attempt's installer is no sign of life of the new one.

    Such a report is "recorded but changes nothing on the node" (``events.apply_report``).
    """
    write_test_workflow(workflows_dir, "token-os", cmdline="token=${report_token}")
    mac = new_mac()
    response = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": "token-os"})
    assert response.status_code == 201, response.json
    node_id = response.json["data"]["id"]
    response = client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": "pending"})
    assert response.status_code == 200, response.json
    first_token = boot_token(client, mac)
    clock.advance(minutes=10)
    assert sweep(app, clock).timed_out == 1
    clock.advance(minutes=1)
    assert boot_token(client, mac) != first_token
    clock.advance(minutes=4)
    stale = client.post(
        "/api/v1/report",
        json={"mac_address": mac, "event": "install_progress", "progress": 50},
        headers={"Authorization": f"Bearer {first_token}"},
    )
    assert stale.status_code == 200, stale.json
    assert stale.json["data"]["state"] == "installing"
    clock.advance(minutes=6)  # ten minutes since the second installer was served

    assert sweep(app, clock).timed_out == 1
    assert get_node(client, node_id)["install_attempts"] == 2


@settings(INSTALL_TIMEOUT_MINUTES=0, INSTALL_SILENCE_MINUTES=10)
def test_silence_alone_still_detects_stalls(app, client, clock):
    """With the overall timeout off, the silence rule still times a silent install out."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=9)
    report(client, mac, "heartbeat")
    clock.advance(minutes=10, seconds=-1)
    assert sweep(app, clock).timed_out == 0
    clock.advance(seconds=1)

    assert sweep(app, clock).timed_out == 1
    assert get_node(client, node_id)["state"] == "pending"


@settings(INSTALL_TIMEOUT_MINUTES=0)
def test_disabled_timeout_never_times_out(app, client, clock):
    """With the timeout at 0 (and silence off) an install may run forever."""
    node_id, mac = installing_node(client)
    clock.advance(days=30)

    result = sweep(app, clock)
    lines = boot(client, mac)

    assert (result.timed_out, result.batches) == (0, 0)
    assert get_node(client, node_id)["state"] == "installing"
    assert any("is installing" in line for line in lines)
    assert count_events(app, "install_timeout") == 0


# -- the sweep ----------------------------------------------------------------------------


def add_installing_nodes(app, count: int, since) -> list[str]:
    """Insert ``count`` installing nodes in one statement; return their ids."""
    rows = [
        {
            "mac_address": f"52:54:01:{n // 65536:02x}:{n // 256 % 256:02x}:{n % 256:02x}",
            "state": "installing",
            "workflow_id": "test-os",
            "install_attempts": 0,
            "created_at": since,
            "updated_at": since,
            "state_changed_at": since,
        }
        for n in range(count)
    ]
    with app.app_context(), write_transaction(db.session):
        return list(db.session.scalars(insert(Node).returning(Node.id), rows))


def test_sweep_handles_many_stalled_nodes_in_batches_exactly_once(app, clock):
    """More than BATCH_SIZE stalled nodes are all timed out, over several batches, once each."""
    count = 2 * sweeper.BATCH_SIZE + sweeper.BATCH_SIZE // 2
    ids = add_installing_nodes(app, count, clock())
    clock.advance(minutes=TIMEOUT)

    result = sweep(app, clock)

    assert (result.timed_out, result.retried, result.failed) == (count, count, 0)
    assert result.batches == math.ceil(count / sweeper.BATCH_SIZE)
    with app.app_context():
        per_node = dict(
            db.session.execute(
                select(NodeEvent.node_id, func.count())
                .where(NodeEvent.event_type == "install_timeout")
                .group_by(NodeEvent.node_id)
            ).all()
        )
        states = db.session.execute(
            select(Node.state, Node.install_attempts, func.count()).group_by(
                Node.state, Node.install_attempts
            )
        ).all()
    assert per_node == {node_id: 1 for node_id in ids}
    assert states == [("pending", 1, count)]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_sweep_finds_its_batch_by_id_not_by_walking_every_installing_node(app, clock):
    """SQLite's planner would serve the batch's UPDATE from the (state, state_changed_at)
    index, reading every installing node once per batch; it must look the batch up by id."""
    add_installing_nodes(app, 3, clock())
    clock.advance(minutes=TIMEOUT)
    updates = []

    def keep_update(_conn, _cursor, statement, parameters, _context, _executemany):
        if statement.startswith("UPDATE nodes"):
            updates.append((statement, parameters))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", keep_update)
        try:
            assert sweep(app, clock).timed_out == 3
        finally:
            event.remove(db.engine, "before_cursor_execute", keep_update)
        [(statement, parameters)] = updates
        plan = db.session.connection().exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", parameters
        )
        details = [row[-1] for row in plan]
    assert details == ["SEARCH nodes USING INDEX sqlite_autoindex_nodes_1 (id=?)"]


def test_sweep_of_an_exact_multiple_of_the_batch_size(app, clock):
    """A last full batch may cost one empty look more, never a node left behind or done twice."""
    count = 2 * sweeper.BATCH_SIZE
    add_installing_nodes(app, count, clock())
    clock.advance(minutes=TIMEOUT)

    result = sweep(app, clock)

    assert result.timed_out == count
    assert result.batches in (2, 3)
    assert count_events(app, "install_timeout") == count


def test_second_sweep_right_after_does_nothing(app, client, clock):
    """A sweep at the same moment finds nothing left to time out and writes nothing."""
    add_installing_nodes(app, 3, clock())
    clock.advance(minutes=TIMEOUT)
    assert sweep(app, clock).timed_out == 3

    again = sweep(app, clock)

    assert (again.timed_out, again.retried, again.failed) == (0, 0, 0)
    assert count_events(app, "install_timeout") == 3


def test_sweep_leaves_nodes_in_other_states_alone(app, client, clock):
    """Only installing nodes can stall; an old pending or installed node is not touched."""
    with app.app_context(), write_transaction(db.session):
        for state in ("discovered", "pending", "installed", "active", "install_failed"):
            db.session.add(
                Node(
                    mac_address=new_mac(),
                    state=state,
                    install_attempts=0,
                    created_at=clock(),
                    updated_at=clock(),
                    state_changed_at=clock(),
                )
            )
    clock.advance(days=1)

    assert sweep(app, clock).timed_out == 0
    assert count_events(app, "install_timeout") == 0


def test_stale_timeout_loses_to_a_concurrent_install_complete(app, client, clock):
    """A timeout decided on a stale read is refused once install_complete moved the node."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT)
    rules = StallRules.from_config(app.config)
    with app.app_context():
        other = Session(db.engine, expire_on_commit=False)
        stale = other.get(Node, node_id)
        stall = stall_of(stale, rules, clock())
        other.commit()
        assert stall is not None

        assert report(client, mac, "install_complete")["state"] == "installed"
        with pytest.raises(ConcurrentTransition):
            with write_transaction(other):
                handle_stall(other, stale, stall, rules=rules, triggered_by="sweeper", now=clock())
        other.close()

    node = get_node(client, node_id)
    assert (node["state"], node["install_attempts"]) == ("installed", 0)
    assert events(client, node_id, "install_timeout") == []
    assert [entry["to_state"] for entry in history(client, node_id)].count("pending") == 1


def test_install_complete_after_the_timeout_is_recorded_but_ignored(app, client, clock):
    """Once the sweeper counted the timeout, a late install_complete changes nothing."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT)
    sweep(app, clock)
    clock.advance(seconds=1)

    answer = report(client, mac, "install_complete")

    assert (answer["state"], answer["install_attempts"]) == ("pending", 1)
    [event] = events(client, node_id, "install_complete")
    assert event["effect"].startswith("ignored")
    assert [entry["to_state"] for entry in history(client, node_id)][-1] == "pending"


# -- boot-time detection ------------------------------------------------------------------


def test_boot_before_the_deadline_changes_nothing(app, client, clock):
    """A boot from an installing node still within its time boots locally, no timeout."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT, seconds=-1)

    lines = boot(client, mac)

    assert not any(line.startswith("kernel") for line in lines)
    assert get_node(client, node_id)["state"] == "installing"
    assert events(client, node_id, "install_timeout") == []


def test_boot_past_the_deadline_times_out_and_serves_the_installer(app, client, clock):
    """The boot handles the timeout at once (retry) and answers the installer again."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT, seconds=-30)
    boot(client, mac)  # seen 30 s ago: only the deadline can make the next boot write
    clock.advance(seconds=30)

    lines = boot(client, mac)

    assert any(line.startswith(INSTALLER_LINE) for line in lines)
    node = get_node(client, node_id)
    assert (node["state"], node["install_attempts"]) == ("installing", 1)
    [event] = events(client, node_id, "install_timeout")
    assert (event["status"], event["message"]) == (
        "failed",
        f"Installation timed out after {TIMEOUT} minutes",
    )
    moves = [(e["from_state"], e["to_state"], e["triggered_by"]) for e in history(client, node_id)]
    assert moves[-2:] == [("installing", "pending", "boot"), ("pending", "installing", "boot")]
    assert sweep(app, clock).timed_out == 0
    assert len(events(client, node_id, "install_timeout")) == 1


@settings(MAX_INSTALL_ATTEMPTS=1)
def test_boot_past_the_deadline_on_the_last_attempt_prints_the_failure(app, client, clock):
    """On the last attempt the boot fails the node and answers a script that says why."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT)

    lines = boot(client, mac)

    assert not any(line.startswith("kernel") for line in lines)
    assert lines[-1] == "exit"
    assert (
        f"echo provisioner: node {node_id} install failed after 1 attempts: "
        f"Installation timed out after {TIMEOUT} minutes"
    ) in lines
    node = get_node(client, node_id)
    assert (node["state"], node["install_attempts"]) == ("install_failed", 1)
    assert len(events(client, node_id, "install_timeout")) == 1
    entry = history(client, node_id)[-1]
    assert (entry["to_state"], entry["triggered_by"]) == ("install_failed", "boot")


# -- the CLI ------------------------------------------------------------------------------


def test_sweep_command(app, runner):
    """``provisioner sweep`` times out, on the wall clock, what is stalled now, once."""
    now = utcnow()
    stalled = add_installing_nodes(app, 2, now - timedelta(minutes=TIMEOUT + 5))
    with app.app_context(), write_transaction(db.session):
        fresh = Node(
            mac_address=new_mac(),
            state="installing",
            install_attempts=0,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
        )
        db.session.add(fresh)
        db.session.flush()
        fresh_id = fresh.id

    result = runner.invoke(args=["sweep"])

    assert result.exit_code == 0, result.output
    assert "timed out 2 stalled install(s): 2 back to pending, 0 install_failed" in result.output
    with app.app_context():
        states = dict(db.session.execute(select(Node.id, Node.state)).all())
    assert states == {stalled[0]: "pending", stalled[1]: "pending", fresh_id: "installing"}
    again = runner.invoke(args=["sweep"])
    assert "timed out 0 stalled install(s)" in again.output

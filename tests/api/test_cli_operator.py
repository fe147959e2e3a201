"""The operator CLI: nodes import/list --json, events [--follow], stalled, prune."""

import json

import pytest

import provisioner.cli.events as cli_events
from provisioner.domain.events import EventType
from provisioner.domain.events import record_event
from provisioner.extensions import db
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction

MAC = "52:54:00:c1:00:01"


def boot_and_install(client, mac: str = MAC) -> None:
    """Register ``mac`` by booting, give it the workflow and boot it into installing."""
    client.get(f"/api/v1/boot?mac={mac}")
    client.patch(f"/api/v1/nodes/{mac}", json={"workflow_id": "test-os"})
    client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})
    client.get(f"/api/v1/boot?mac={mac}")


def test_import_creates_good_rows_and_names_the_bad_ones(runner, client, tmp_path):
    """Bad rows are reported with their line and field, good ones are created, exit 1."""
    csv_file = tmp_path / "nodes.csv"
    csv_file.write_text(
        "mac_address,hostname,workflow_id,tags\n"
        "52-54-00-c1-00-01,web-1,test-os,rack1;web\n"
        "52:54:00:c1:00:02,bad_name,,\n"
        "52:54:00:c1:00:03,db-1,no-such-os,\n"
        "zz,,,\n"
    )
    result = runner.invoke(args=["nodes", "import", str(csv_file)])
    assert result.exit_code == 1
    assert "created 1 node(s), skipped 3" in result.output
    assert "line 3: hostname:" in result.output
    assert "line 4: Unknown workflow 'no-such-os'" in result.output
    assert "line 5: mac_address:" in result.output
    node = client.get("/api/v1/nodes/52:54:00:c1:00:01").json["data"]
    assert (node["hostname"], node["workflow_id"], node["tags"]) == (
        "web-1",
        "test-os",
        ["rack1", "web"],
    )
    assert client.get("/api/v1/nodes").json["total"] == 1


def test_import_of_a_clean_file_exits_0(runner, client, tmp_path):
    """Every row created: exit status 0."""
    csv_file = tmp_path / "nodes.csv"
    rows = "".join(f"52:54:00:c1:01:{i:02x},node-{i}\n" for i in range(30))
    csv_file.write_text("mac_address,hostname\n" + rows)
    result = runner.invoke(args=["nodes", "import", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "created 30 node(s), skipped 0" in result.output
    assert client.get("/api/v1/nodes").json["total"] == 30


def test_import_refuses_an_unknown_column(runner, tmp_path):
    """A misspelt column is an error, not silently ignored."""
    csv_file = tmp_path / "nodes.csv"
    csv_file.write_text("mac_address,hostnmae\n52:54:00:c1:00:01,web-1\n")
    result = runner.invoke(args=["nodes", "import", str(csv_file)])
    assert result.exit_code == 1
    assert "line 2: hostnmae: Unknown column." in result.output


def test_nodes_list_json(runner, client):
    """--json prints the API's node objects and the total."""
    boot_and_install(client)
    result = runner.invoke(args=["nodes", "list", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["total"] == 1
    assert data["data"][0]["mac_address"] == MAC
    assert data["data"][0]["state"] == "installing"


def test_events_prints_the_latest_oldest_first(runner, client):
    """The node's events, oldest first, with type, progress and effect."""
    boot_and_install(client)
    client.post(
        "/api/v1/report", json={"mac_address": MAC, "event": "install_progress", "progress": 40}
    )
    result = runner.invoke(args=["events", MAC])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "discovered" in lines[0]
    assert "install_progress" in lines[-1] and "40%" in lines[-1]
    assert "[progress 40%]" in lines[-1]


def test_events_follow_prints_new_events_until_interrupted(
    app, runner, client, clock, monkeypatch
):
    """--follow polls the event cursor: an event recorded meanwhile is printed, Ctrl-C stops."""
    boot_and_install(client)
    polls = []

    def fake_sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            with app.app_context(), write_transaction(db.session):
                node = find_node(db.session, MAC)
                record_event(
                    db.session, node, EventType.HEARTBEAT, now=clock(), message="still here"
                )
            return
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_events.time, "sleep", fake_sleep)
    result = runner.invoke(args=["events", MAC, "--follow"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].endswith("still here")
    assert len(polls) == 2


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    app_config.update(getattr(request, "param", {}))
    return app_config


@pytest.mark.parametrize("app_config", [{"INSTALL_TIMEOUT_MINUTES": 30}], indirect=True)
def test_stalled_prints_the_feed(runner, client):
    """An install started long ago (the test clock is in January) is listed with its reason."""
    boot_and_install(client)
    result = runner.invoke(args=["stalled"])
    assert result.exit_code == 0, result.output
    assert MAC in result.output and "install_timeout" in result.output
    assert result.output.strip().endswith("1 stalled")


@pytest.mark.parametrize("app_config", [{"EVENT_RETENTION_DAYS": 30}], indirect=True)
def test_prune_shows_progress_and_deletes_old_events(runner, client):
    """Events older than the retention of a node outside an open episode are deleted."""
    client.get(f"/api/v1/boot?mac={MAC}")
    for _ in range(3):
        client.post("/api/v1/report", json={"mac_address": MAC, "event": "heartbeat"})
    result = runner.invoke(args=["prune"])
    assert result.exit_code == 0, result.output
    assert "pruning events" in result.output
    assert "deleted 4 expired event(s)" in result.output
    assert client.get(f"/api/v1/nodes/{MAC}/events").json["total"] == 0

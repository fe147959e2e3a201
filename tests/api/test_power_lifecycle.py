"""Hands-off lifecycle: the sweeper's retry netboots a stalled install (when enabled), and
the background job keeps each node's last known power state."""

import pytest
from powerhelpers import events_of
from powerhelpers import finished_action
from powerhelpers import ipmi_bmc
from powerhelpers import wait_for

from provisioner import scheduler


def stalled_install(client, clock, bmc) -> str:
    node = client.post("/api/v1/nodes", json={"mac_address": "52:54:00:ff:00:01"}).json["data"]
    client.patch(
        f"/api/v1/nodes/{node['id']}",
        json={
            "power": {
                "driver": "ipmi",
                "address": bmc["address"],
                "username": bmc["user"],
                "password": bmc["password"],
            }
        },
    )
    for state in ("pending", "installing"):
        response = client.patch(f"/api/v1/nodes/{node['id']}/state", json={"state": state})
        assert response.status_code == 200, response.json
    clock.advance(minutes=90)
    return node["id"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sweeper_retry_netboots_the_node_when_enabled(build_app, clock, tmp_path):
    app = build_app(POWER_CYCLE_STALLED=True, INSTALL_TIMEOUT_MINUTES=60)
    client = app.test_client()
    with ipmi_bmc(tmp_path) as bmc:
        node_id = stalled_install(client, clock, bmc)
        scheduler.run_sweep(app)
        assert client.get(f"/api/v1/nodes/{node_id}").json["data"]["state"] == "pending"
        requested = next(
            event
            for event in events_of(client, node_id)
            if event["event_type"] == "power_requested"
        )
        assert "by sweeper" in requested["message"]
        action = finished_action(client, requested["metadata"]["action_id"])
        assert action["action"] == "netboot" and action["status"] == "succeeded"
        assert bmc["log"].read_text().splitlines()[1:] == ["bootdev network", "power on"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sweeper_leaves_power_alone_by_default(build_app, clock, tmp_path):
    app = build_app(INSTALL_TIMEOUT_MINUTES=60)
    client = app.test_client()
    with ipmi_bmc(tmp_path) as bmc:
        node_id = stalled_install(client, clock, bmc)
        scheduler.run_sweep(app)
        assert client.get(f"/api/v1/nodes/{node_id}").json["data"]["state"] == "pending"
        types = {event["event_type"] for event in events_of(client, node_id)}
        assert "power_requested" not in types
        assert bmc["log"].read_text().splitlines() == ["ready"]


def test_refresh_job_records_the_power_state_without_events(app, client, clock, tmp_path):
    with ipmi_bmc(tmp_path) as bmc:
        node_id = stalled_install(client, clock, bmc)
        before = len(events_of(client, node_id))
        scheduler.run_power_refresh(app)
        view = wait_for(
            lambda: (
                (data := client.get(f"/api/v1/nodes/{node_id}/power").json["data"])["state"]
                and data
            ),
            "the refreshed power state",
        )
    assert view["state"] == "off"
    assert len(events_of(client, node_id)) == before

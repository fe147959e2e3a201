"""Power control through the API: settings (password never shown), actions off the request
path against real BMC servers on loopback, their events, and the faults."""

import json
import socket
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from powerhelpers import BlockingRedfish
from powerhelpers import events_of
from powerhelpers import finished_action
from powerhelpers import free_port
from powerhelpers import ipmi_bmc
from powerhelpers import silent_listener
from powerhelpers import wait_for
from sqlalchemy import text

from provisioner.extensions import db

PASSWORD = "Sup3r-S3cret-BMC-pw"


def new_node(client, mac: str = "52:54:00:aa:00:01", **extra) -> dict:
    response = client.post("/api/v1/nodes", json={"mac_address": mac, **extra})
    assert response.status_code == 201, response.json
    return response.json["data"]


def set_power(client, node_id: str, **power) -> dict:
    response = client.patch(f"/api/v1/nodes/{node_id}", json={"power": power})
    assert response.status_code == 200, response.json
    return response.json


def act(client, node_id: str, action: str) -> dict:
    response = client.post(f"/api/v1/nodes/{node_id}/power", json={"action": action})
    assert response.status_code == 202, response.json
    return response.json["data"]


#: One refusal of each kind through the API; every rule: tests/unit/test_power_settings.py.
@pytest.mark.parametrize(
    ("power", "field"),
    [
        ({"driver": "redfish", "address": "https://u:p@bmc/redfish/v1/Systems/1"}, "address"),
        ({"driver": "wol", "address": "10.0.0.255", "password": "x"}, "username"),
        ({"driver": "telnet", "address": "10.0.0.1"}, "driver"),
    ],
)
def test_bad_power_settings_are_refused_naming_the_field(client, power, field):
    node = new_node(client)
    response = client.patch(f"/api/v1/nodes/{node['id']}", json={"power": power})
    assert response.status_code == 422
    assert field in response.json["errors"]["power"]


def test_password_is_stored_encrypted_and_never_shown(app, client, tmp_path):
    node = new_node(client)
    body = set_power(
        client, node["id"], driver="ipmi", address="10.0.0.9", username="root", password=PASSWORD
    )
    shown = [
        body,
        client.get(f"/api/v1/nodes/{node['id']}").json,
        client.get(f"/api/v1/nodes/{node['id']}/power").json,
        client.get("/api/v1/nodes").json,
        events_of(client, node["id"]),
        client.get("/api/v1/events").json,
    ]
    assert PASSWORD not in json.dumps(shown)
    assert client.get(f"/api/v1/nodes/{node['id']}/power").json["data"]["password_set"] is True
    with app.app_context():
        stored = db.session.execute(text("SELECT password_encrypted FROM node_power")).scalar()
    assert PASSWORD not in stored
    key = (Path(app.config["DATA_DIR"]) / "power.key").read_bytes()
    assert Fernet(key).decrypt(stored.encode()).decode() == PASSWORD
    assert (Path(app.config["DATA_DIR"]) / "power.key").stat().st_mode & 0o077 == 0


def test_password_kept_when_left_out_and_dropped_with_manual(client):
    node = new_node(client)
    set_power(client, node["id"], driver="ipmi", address="10.0.0.9", password=PASSWORD)
    set_power(client, node["id"], driver="ipmi", address="10.0.0.9", username="admin")
    view = client.get(f"/api/v1/nodes/{node['id']}/power").json["data"]
    assert view["password_set"] is True and view["username"] == "admin"
    set_power(client, node["id"], driver="manual")
    view = client.get(f"/api/v1/nodes/{node['id']}/power").json["data"]
    assert view == {"driver": "manual", "address": None, "username": None, "password_set": False}


def test_manual_node_refuses_actions(client):
    node = new_node(client)
    response = client.post(f"/api/v1/nodes/{node['id']}/power", json={"action": "on"})
    assert response.status_code == 409
    assert "manual" in response.json["message"]


def test_wol_cannot_power_off(client):
    node = new_node(client)
    set_power(client, node["id"], driver="wol", address="127.255.255.255")
    response = client.post(f"/api/v1/nodes/{node['id']}/power", json={"action": "off"})
    assert response.status_code == 409
    assert response.json["errors"] == {"action": [response.json["message"]]}


def test_ipmi_netboot_sets_pxe_once_and_powers_on(client, tmp_path):
    node = new_node(client)
    with ipmi_bmc(tmp_path) as bmc:
        set_power(
            client,
            node["id"],
            driver="ipmi",
            address=bmc["address"],
            username=bmc["user"],
            password=bmc["password"],
        )
        action = finished_action(client, act(client, node["id"], "netboot")["id"])
        assert action["status"] == "succeeded", action
        assert bmc["log"].read_text().splitlines()[1:] == ["bootdev network", "power on"]
        status = finished_action(client, act(client, node["id"], "status")["id"])
    assert status["result"] == "on"
    assert client.get(f"/api/v1/nodes/{node['id']}/power").json["data"]["state"] == "on"
    types = [event["event_type"] for event in events_of(client, node["id"])]
    assert types[:4] == ["power_status", "power_requested", "power_netboot", "power_requested"]


def test_wrong_ipmi_password_says_so_without_echoing_it(client, tmp_path):
    node = new_node(client)
    with ipmi_bmc(tmp_path) as bmc:
        set_power(
            client,
            node["id"],
            driver="ipmi",
            address=bmc["address"],
            username=bmc["user"],
            password=PASSWORD,
        )
        action = finished_action(client, act(client, node["id"], "on")["id"])
        assert bmc["log"].read_text().splitlines() == ["ready"]
    assert action["status"] == "failed"
    assert "refused the user name or password" in action["error"]
    failed = events_of(client, node["id"])[0]
    assert failed["event_type"] == "power_failed"
    assert failed["metadata"]["reason"] == "auth"
    assert PASSWORD not in json.dumps(failed) + json.dumps(action)


def unanswered_ipmi_cycle(client) -> tuple[dict, dict]:
    """Cycle a pending node whose BMC address is a UDP port nobody answers on; return the
    finished action and the node's newest event."""
    node = new_node(client)
    client.patch(f"/api/v1/nodes/{node['id']}/state", json={"state": "pending"})
    port = free_port(socket.SOCK_DGRAM)
    set_power(client, node["id"], driver="ipmi", address=f"127.0.0.1:{port}", password="x")
    action = finished_action(client, act(client, node["id"], "cycle")["id"])
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"]["state"] == "pending"
    return action, events_of(client, node["id"])[0]


def test_unanswered_ipmi_port_fails_within_the_timeout_and_leaves_the_state_alone(build_app):
    # ipmitool asks for 2 s before its first retry: a 1 s action timeout stops it first.
    action, failed = unanswered_ipmi_cycle(build_app(POWER_TIMEOUT_SECONDS=1).test_client())
    assert action["status"] == "failed"
    assert failed["event_type"] == "power_failed" and failed["status"] == "failed"
    assert failed["metadata"]["reason"] == "timeout"


@pytest.mark.slow  # ipmitool gives up after its own retries: ~10 s
@pytest.mark.parametrize("backend", ["sqlite"])
def test_ipmitool_giving_up_on_an_unanswered_port_is_unreachable(client):
    action, failed = unanswered_ipmi_cycle(client)
    assert action["status"] == "failed"
    assert failed["event_type"] == "power_failed"
    assert failed["metadata"]["reason"] == "unreachable"


def test_redfish_bmc_that_never_answers_fails_within_the_timeout(build_app):
    app = build_app(POWER_TIMEOUT_SECONDS=1)
    client = app.test_client()
    node = new_node(client)
    with silent_listener() as url:
        set_power(client, node["id"], driver="redfish", address=url, username="u", password="p")
        action = finished_action(client, act(client, node["id"], "status")["id"])
    assert action["status"] == "failed"
    assert events_of(client, node["id"])[0]["metadata"]["reason"] == "timeout"


def test_a_changed_power_key_fails_the_action_clearly(build_app):
    first = build_app(POWER_KEY=Fernet.generate_key().decode())
    client = first.test_client()
    node = new_node(client)
    set_power(client, node["id"], driver="ipmi", address="127.0.0.1:9", password=PASSWORD)
    second = build_app(POWER_KEY=Fernet.generate_key().decode())
    action = finished_action(
        second.test_client(), act(second.test_client(), node["id"], "on")["id"]
    )
    assert action["status"] == "failed"
    assert "cannot be decrypted" in action["error"]


def test_wake_on_lan_sends_the_magic_packet(client):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(60)
        port = listener.getsockname()[1]
        node = new_node(client, mac="52:54:00:12:34:56")
        set_power(client, node["id"], driver="wol", address=f"127.0.0.1:{port}")
        action = finished_action(client, act(client, node["id"], "on")["id"])
        packet = listener.recv(1024)
    assert action["status"] == "succeeded"
    assert packet == b"\xff" * 6 + bytes.fromhex("525400123456") * 16


def test_hundred_pending_actions_never_delay_a_boot_or_a_report(build_app):
    app = build_app(POWER_WORKERS=4)
    client = app.test_client()
    bmc = BlockingRedfish()
    try:
        nodes = [new_node(client, mac=f"52:54:00:bb:00:{i:02x}") for i in range(4)]
        for node in nodes:
            set_power(client, node["id"], driver="redfish", address=bmc.url)
        for node in nodes:
            client.post(f"/api/v1/nodes/{node['id']}/tags", json={"tags": ["rack1"]})
        ids = []
        for _ in range(25):
            response = client.post("/api/v1/power", json={"action": "on", "tag": "rack1"})
            assert response.status_code == 202
            ids += [action["id"] for action in response.json["data"]]
        assert len(ids) == 100
        wait_for(lambda: bmc.waiting >= 4, "the workers to reach the BMC")
        boot = client.get("/api/v1/boot", query_string={"mac": "52:54:00:cc:00:01"})
        report = client.post(
            "/api/v1/report",
            json={"mac_address": "52:54:00:cc:00:01", "event_type": "heartbeat"},
        )
        pending = [client.get(f"/api/v1/power/actions/{i}").json["data"]["status"] for i in ids]
        assert boot.status_code == 200 and report.status_code in (200, 201, 202), report.json
        assert all(status in ("queued", "running") for status in pending)
        assert pending.count("running") <= 4
        bmc.release()
        outcomes = [finished_action(client, i)["status"] for i in ids]
    finally:
        bmc.close()
    assert outcomes == ["failed"] * 100


def test_reinstall_with_power_queues_a_netboot(client, tmp_path):
    node = new_node(client)
    with ipmi_bmc(tmp_path) as bmc:
        set_power(
            client,
            node["id"],
            driver="ipmi",
            address=bmc["address"],
            username=bmc["user"],
            password=bmc["password"],
        )
        response = client.patch(
            f"/api/v1/nodes/{node['id']}/state", json={"state": "pending", "power": True}
        )
        assert response.status_code == 200
        requested = events_of(client, node["id"])[0]
        assert requested["event_type"] == "power_requested"
        action = finished_action(client, requested["metadata"]["action_id"])
        assert action["action"] == "netboot" and action["status"] == "succeeded"
        assert bmc["log"].read_text().splitlines()[1:] == ["bootdev network", "power on"]


def test_reinstall_with_power_of_a_manual_node_changes_nothing(client):
    node = new_node(client)
    response = client.patch(
        f"/api/v1/nodes/{node['id']}/state", json={"state": "pending", "power": True}
    )
    assert response.status_code == 409
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"]["state"] == "discovered"

"""``POST /api/v1/nodes/<ref>/phone-home``: cloud-init's ``phone_home`` module as first boot.

cloud-init posts ``instance_id``, ``hostname``, ``fqdn`` and ``pub_key_*`` form-encoded to the
URL the autoinstall user-data gives it (``...?token=<report token>``). The server records a
``first_boot`` event with those fields as metadata, moves ``installed → active``, follows the
report-token rules, and never writes the host keys (or the token) to its log.
"""

import logging
import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
from prometheus_client import REGISTRY
from serverproc import start_server
from sqlalchemy import text
from workflowfiles import write_test_workflow

from provisioner.extensions import db

MAC = "52:54:00:9e:00:01"
OTHER_MAC = "52:54:00:9e:00:02"
UNKNOWN_MAC = "52:54:00:9e:00:99"
WORKFLOW = "ph-os"
WRONG_TOKEN = "not-the-report-token-0123456789abcdefghijklmno"
RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQDsecretrsakeymaterial root@node-1"
ECDSA_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYsecretecdsa root@node-1"
ED25519_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIsecreted25519keymaterial root@node-1"
FIELDS = {
    "instance_id": "provisioner-node-1",
    "hostname": "node-1",
    "fqdn": "node-1.lab.example",
    "pub_key_rsa": RSA_KEY,
    "pub_key_ecdsa": ECDSA_KEY,
    "pub_key_ed25519": ED25519_KEY,
}
KEYS = (RSA_KEY, ECDSA_KEY, ED25519_KEY)


@pytest.fixture
def workflows_dir(workflows_dir: Path) -> Path:
    write_test_workflow(
        workflows_dir,
        WORKFLOW,
        kernel_path="${server}/files/vmlinuz",
        initrd_path="${server}/files/initrd.img",
        cmdline="console=ttyS0 report_token=${report_token}",
    )
    return workflows_dir


@pytest.fixture
def report_auth() -> str:
    """``REPORT_AUTH`` for the app; token-mode tests parametrize it."""
    return "open"


@pytest.fixture
def app_config(app_config: dict, report_auth: str) -> dict:
    return app_config | {"REPORT_AUTH": report_auth}


def installing(client, mac: str = MAC) -> tuple[dict, str]:
    """A node served its installer; (the node, its report token)."""
    created = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": WORKFLOW})
    assert created.status_code == 201, created.json
    pending = client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})
    assert pending.status_code == 200, pending.json
    script = client.get("/api/v1/boot", query_string={"mac": mac}).get_data(as_text=True)
    return created.json["data"], re.search(r"report_token=(\S+)", script).group(1)


def installed(client, mac: str = MAC) -> tuple[dict, str]:
    """A node whose installer reported completion; (the node, its report token)."""
    node, token = installing(client, mac)
    response = client.post(
        "/api/v1/report",
        json={"mac_address": mac, "event": "install_complete"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == "installed"
    return node, token


def phone_home(client, ref: str, token: str | None = None, data: dict | None = None, **kwargs):
    """POST form fields as cloud-init does, the token in the query string."""
    query = {} if token is None else {"token": token}
    return client.post(
        f"/api/v1/nodes/{ref}/phone-home",
        data=FIELDS if data is None else data,
        query_string=query,
        **kwargs,
    )


def events(client, mac: str = MAC) -> list[dict]:
    """The node's events, newest first."""
    return client.get(f"/api/v1/nodes/{mac}/events", query_string={"limit": 500}).json["data"]


def state(client, mac: str = MAC) -> str:
    return client.get(f"/api/v1/nodes/{mac}").json["data"]["state"]


def rejected() -> float:
    labels = {"reason": "token"}
    return REGISTRY.get_sample_value("provisioner_report_rejected_total", labels) or 0.0


@pytest.fixture
def rows(app):
    """Count a table's committed rows."""

    def count(table: str) -> int:
        with app.app_context():
            return db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()

    return count


# -- the event and the state change ----------------------------------------------------------


def test_form_body_becomes_a_first_boot_event_with_the_fields_as_metadata(client):
    node, token = installed(client)

    response = phone_home(client, node["id"], token)

    assert response.status_code == 200, response.json
    assert response.json["success"] is True
    assert response.json["data"]["state"] == "active"
    latest = events(client)[0]
    assert latest["event_type"] == "first_boot"
    assert latest["message"] == "cloud-init phone_home"
    assert latest["metadata"] == FIELDS
    assert latest["effect"] == "installed→active"


def test_the_state_change_keeps_the_fields_too(client):
    node, token = installed(client)

    phone_home(client, MAC, token)

    history = client.get(f"/api/v1/nodes/{node['id']}/history").json["data"]
    assert (history[-1]["from_state"], history[-1]["to_state"]) == ("installed", "active")
    assert history[-1]["metadata"] == FIELDS


@pytest.mark.parametrize("ref", ["id", MAC, MAC.upper().replace(":", "-"), "5254009e0001"])
def test_node_is_named_by_id_or_mac(client, ref):
    node, token = installed(client)

    response = phone_home(client, node["id"] if ref == "id" else ref, token)

    assert response.status_code == 200, response.json
    assert state(client) == "active"


def test_only_cloud_inits_fields_are_kept_and_each_is_bounded(client):
    node, token = installed(client)
    data = {"hostname": "h" * 10_000, "pub_key_dsa": "ssh-dss AAAA", "evil": "x", "token": "t"}

    phone_home(client, node["id"], token, data=data)

    metadata = events(client)[0]["metadata"]
    assert set(metadata) == {"hostname", "pub_key_dsa"}
    assert metadata["hostname"] == "h" * 8192


def test_a_json_body_carries_no_fields(client):
    """cloud-init sends a form; anything else yields a first_boot without metadata."""
    node, token = installed(client)

    response = client.post(
        f"/api/v1/nodes/{node['id']}/phone-home",
        json=FIELDS,
        query_string={"token": token},
    )

    assert response.status_code == 200, response.json
    assert not events(client)[0]["metadata"]
    assert state(client) == "active"


def test_phone_home_before_the_install_completed_is_recorded_and_ignored(client):
    node, token = installing(client)

    response = phone_home(client, node["id"], token)

    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == "installing"
    latest = events(client)[0]
    assert latest["event_type"] == "first_boot"
    assert latest["effect"].startswith("ignored")


def test_a_second_phone_home_changes_nothing(client, rows):
    """cloud-init runs phone_home once per instance; a repeat is logged, the node stays."""
    node, token = installed(client)
    phone_home(client, node["id"], token)
    logs = rows("node_state_logs")

    again = phone_home(client, node["id"], token)

    assert again.status_code == 200
    assert again.json["data"]["state"] == "active"
    assert rows("node_state_logs") == logs
    assert events(client)[0]["effect"].startswith("ignored")


def test_unknown_node_is_404_in_open_mode(client):
    response = phone_home(client, UNKNOWN_MAC)

    assert response.status_code == 404
    assert response.is_json


def test_open_mode_needs_no_token(client):
    installed(client)

    assert phone_home(client, MAC).json["data"]["state"] == "active"


# -- token mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("report_auth", ["token"])
class TestTokenMode:
    """``REPORT_AUTH = "token"``: the install attempt's report token, as for any report."""

    @pytest.mark.parametrize("how", ["query", "header", "bearer"])
    def test_current_token_is_accepted(self, client, how):
        node, token = installed(client)
        kwargs = {
            "query": {"token": token},
            "header": {"headers": {"X-Report-Token": token}},
            "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
        }[how]
        token_arg = kwargs.pop("token", None)

        response = phone_home(client, node["id"], token_arg, **kwargs)

        assert response.status_code == 200, response.json
        assert response.json["data"]["state"] == "active"

    @pytest.mark.parametrize("token", [None, "", WRONG_TOKEN])
    def test_wrong_or_missing_token_is_401_and_writes_nothing(self, client, rows, token):
        node, _ = installed(client)
        before = (rows("node_events"), rows("node_state_logs"), rejected())

        response = phone_home(client, node["id"], token)

        assert response.status_code == 401
        assert response.is_json and "token" in response.json["message"].lower()
        assert (rows("node_events"), rows("node_state_logs")) == before[:2]
        assert rejected() == before[2] + 1
        assert state(client) == "installed"

    def test_unknown_node_gets_the_same_answer_as_a_wrong_token(self, client):
        node, _ = installed(client)

        known = phone_home(client, node["id"], WRONG_TOKEN)
        unknown = phone_home(client, UNKNOWN_MAC, WRONG_TOKEN)

        assert unknown.status_code == 401
        assert (unknown.status_code, unknown.json) == (known.status_code, known.json)
        assert UNKNOWN_MAC not in unknown.get_data(as_text=True)

    def test_another_nodes_token_is_refused(self, client):
        installed(client)
        _, other_token = installed(client, OTHER_MAC)

        assert phone_home(client, MAC, other_token).status_code == 401
        assert state(client) == "installed"

    def test_the_previous_attempts_token_is_recorded_as_stale(self, client, rows):
        """A late phone_home from a superseded install is kept, but moves nothing."""
        _, first = installing(client)
        failed = client.post(
            "/api/v1/report",
            json={"mac_address": MAC, "event": "install_failed", "message": "disk"},
            headers={"Authorization": f"Bearer {first}"},
        )
        assert failed.status_code == 200, failed.json
        client.get("/api/v1/boot", query_string={"mac": MAC})  # the second attempt
        logs = rows("node_state_logs")

        response = phone_home(client, MAC, first)

        assert response.status_code == 200, response.json
        assert response.json["data"]["state"] == "installing"
        assert rows("node_state_logs") == logs
        assert events(client)[0]["effect"] == "ignored: report from a previous install attempt"


# -- keys and tokens stay out of the logs ----------------------------------------------------


@pytest.mark.parametrize("report_auth", ["token"])
def test_host_keys_and_token_are_not_logged(client, caplog, report_auth):
    caplog.set_level(logging.DEBUG)
    node, token = installed(client)

    response = phone_home(client, node["id"], token)

    assert response.status_code == 200
    for secret in (*KEYS, token):
        assert secret not in caplog.text


@pytest.mark.e2e
def test_real_server_stores_the_keys_but_never_logs_them_or_the_token(tmp_path):
    """``provisioner serve`` at DEBUG: the keys reach the event log, not the server log."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write_test_workflow(
        workflows,
        WORKFLOW,
        kernel_path="${server}/files/vmlinuz",
        initrd_path="${server}/files/initrd.img",
        cmdline="console=ttyS0 report_token=${report_token}",
    )
    settings = {"WORKFLOWS_DIR": str(workflows), "REPORT_AUTH": "token", "LOG_LEVEL": "DEBUG"}
    with start_server(tmp_path, **settings) as server:
        server.post_json("/api/v1/nodes", {"mac_address": MAC, "workflow_id": WORKFLOW})
        server.patch_json(f"/api/v1/nodes/{MAC}/state", {"state": "pending"})
        token = re.search(r"report_token=(\S+)", server.get(f"/api/v1/boot?mac={MAC}").text)[1]
        complete = server.post_json(
            "/api/v1/report",
            {"mac_address": MAC, "event": "install_complete"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert complete.status == 200, complete
        form = urlencode(FIELDS).encode()

        answer = server.request(
            "POST",
            f"/api/v1/nodes/{MAC}/phone-home?token={token}",
            form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        events_answer = server.get(f"/api/v1/nodes/{MAC}/events")
        log = server.log_text()

    assert answer.status == 200, answer
    assert answer.body["data"]["state"] == "active"
    assert events_answer.body["data"][0]["metadata"] == FIELDS
    for secret in (*KEYS, token):
        assert secret not in log

"""The dashboard's power panel: driver and last known state shown, the password never;
its buttons queue actions like the API."""

from powerhelpers import finished_action
from powerhelpers import ipmi_bmc

from api.test_dashboard import csrf_from
from api.test_dashboard import html

PASSWORD = "Dash-S3cret-pw"


def test_node_page_shows_power_settings_but_never_the_password(client):
    node = client.post("/api/v1/nodes", json={"mac_address": "52:54:00:d0:00:01"}).json["data"]
    page = html(client.get(f"/nodes/{node['id']}"))
    assert "Manual: nobody drives this machine" in page
    client.patch(
        f"/api/v1/nodes/{node['id']}",
        json={
            "power": {
                "driver": "ipmi",
                "address": "10.9.9.9",
                "username": "ops",
                "password": PASSWORD,
            }
        },
    )
    page = html(client.get(f"/nodes/{node['id']}"))
    assert "IPMI at <code>10.9.9.9</code> as ops" in page
    assert 'name="power_action" value="cycle"' in page
    assert PASSWORD not in page


def test_power_button_queues_the_action(client, tmp_path):
    node = client.post("/api/v1/nodes", json={"mac_address": "52:54:00:d0:00:02"}).json["data"]
    with ipmi_bmc(tmp_path) as bmc:
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
        data = {"csrf_token": csrf_from(client, f"/nodes/{node['id']}"), "power_action": "on"}
        response = client.post(f"/nodes/{node['id']}/power", data=data, follow_redirects=True)
        assert "Power on queued" in html(response)
        events = client.get(f"/api/v1/nodes/{node['id']}/events").json["data"]
        requested = next(e for e in events if e["event_type"] == "power_requested")
        assert "by dashboard" in requested["message"]
        assert finished_action(client, requested["metadata"]["action_id"])["status"] == "succeeded"
        assert bmc["log"].read_text().splitlines()[-1] == "power on"
    page = html(client.get(f"/nodes/{node['id']}"))
    assert '<strong class="power-state">on</strong>' in page

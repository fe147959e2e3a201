"""Node fields that reach install configs are refused when hostile, at every way in.

A hostname or IP address is rendered into kickstarts, preseeds and cloud-configs, so the
API, the report endpoint, the CLI, the CSV import and the boot path (the peer address) all
hold them to one rule: RFC 1123 host names, and IP addresses whose IPv6 zone id is a plain
interface name. Refusals are 422 naming the field and write nothing. Tags share one cap.
"""

import pytest
from hostile import HOSTILE_IPS
from hostile import HOSTILE_TEXT
from sqlalchemy import select

from provisioner.extensions import db
from provisioner.models import Node
from provisioner.web.schemas.fields import MAX_TAGS

MAC = "52:54:00:d0:00:01"

#: Through HTTP one hostile hostname and one hostile address at each way in; the whole
#: table, at every schema, is tests/unit/test_schemas.py.
HOSTILE_FIELDS = [
    ("hostname", HOSTILE_TEXT["newline"]),
    ("ip_address", HOSTILE_IPS["zone-command"]),
]
FIELD_IDS = ["hostname-newline", "ip-zone-command"]


def assert_422_naming(response, field: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.is_json and response.json["success"] is False
    assert field in response.json["errors"], response.json


def stored(app) -> list[Node]:
    with app.app_context():
        return list(db.session.scalars(select(Node)))


def create(client, **fields) -> dict:
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, **fields})
    assert response.status_code == 201, response.json
    return response.json["data"]


# -- hostname and ip_address -----------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), HOSTILE_FIELDS, ids=FIELD_IDS)
def test_create_refuses_a_hostile_field(app, client, field, value):
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, field: value})

    assert_422_naming(response, field)
    assert stored(app) == []


@pytest.mark.parametrize(("field", "value"), HOSTILE_FIELDS, ids=FIELD_IDS)
def test_update_refuses_a_hostile_field(client, field, value):
    node = create(client, hostname="web-1", ip_address="192.0.2.1")

    response = client.patch(f"/api/v1/nodes/{node['id']}", json={field: value})

    assert_422_naming(response, field)
    after = client.get(f"/api/v1/nodes/{node['id']}").json["data"]
    assert (after["hostname"], after["ip_address"]) == ("web-1", "192.0.2.1")


@pytest.mark.parametrize(("field", "value"), HOSTILE_FIELDS, ids=FIELD_IDS)
def test_a_report_with_a_hostile_field_is_refused(client, field, value):
    node = create(client)

    response = client.post(
        "/api/v1/report", json={"mac_address": MAC, "event": "heartbeat", field: value}
    )

    assert_422_naming(response, field)
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"][field] is None


#: Stored and read back on each database; every form: tests/unit/test_ipaddr.py.
@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("FE80::1%eth0.100", "fe80::1%eth0.100"),
        ("2001:DB8::1", "2001:db8::1"),
        ("192.0.2.7", "192.0.2.7"),
    ],
)
def test_plain_addresses_and_zone_ids_are_accepted_in_canonical_form(client, text, canonical):
    assert create(client, ip_address=text)["ip_address"] == canonical


def test_a_forwarded_address_with_a_junk_zone_is_not_recorded(build_app):
    """The boot path stores the peer address as the node's IP: it obeys the same rule."""
    app = build_app(TRUSTED_PROXIES=1)

    response = app.test_client().get(
        "/api/v1/boot",
        query_string={"mac": MAC},
        headers={"X-Forwarded-For": HOSTILE_IPS["zone-command"]},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )

    assert response.status_code == 200
    [node] = stored(app)
    assert node.ip_address is None


def test_boot_refuses_a_hostile_hostname(app, client):
    response = client.get(
        "/api/v1/boot", query_string={"mac": MAC, "hostname": HOSTILE_TEXT["command-substitution"]}
    )

    assert response.status_code == 400
    assert "hostname" in response.get_data(as_text=True)
    assert stored(app) == []


def test_cli_nodes_add_refuses_a_hostile_hostname(app, runner):
    result = runner.invoke(args=["nodes", "add", MAC, "--hostname", "web-1$(reboot)"])

    assert result.exit_code != 0
    assert "hostname" in result.output
    assert stored(app) == []


def test_cli_nodes_add_still_takes_a_mac_in_any_form(app, runner):
    result = runner.invoke(args=["nodes", "add", "52-54-00-D0-00-01", "--hostname", "web-1"])

    assert result.exit_code == 0, result.output
    assert [(node.mac_address, node.hostname) for node in stored(app)] == [(MAC, "web-1")]


def test_csv_import_refuses_a_junk_zone(app, runner, tmp_path):
    csv_file = tmp_path / "nodes.csv"
    csv_file.write_text(f'mac_address,ip_address\n{MAC},"{HOSTILE_IPS["zone-command"]}"\n')

    result = runner.invoke(args=["nodes", "import", str(csv_file)])

    assert result.exit_code == 1
    assert "line 2: ip_address:" in result.output
    assert stored(app) == []


# -- tags ------------------------------------------------------------------------------------


def tags(count: int, prefix: str = "t") -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


@pytest.mark.parametrize("count", [MAX_TAGS + 1, 500])
def test_create_refuses_more_tags_than_the_cap(app, client, count):
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, "tags": tags(count)})

    assert_422_naming(response, "tags")
    assert stored(app) == []


def test_create_takes_exactly_the_cap(client):
    assert len(create(client, tags=tags(MAX_TAGS))["tags"]) == MAX_TAGS


def test_the_tags_endpoint_keeps_a_node_within_the_cap(client):
    """The cap is on the node: adding one more than it may carry is 422, nothing added."""
    node = create(client, tags=tags(MAX_TAGS - 1))
    url = f"/api/v1/nodes/{node['id']}/tags"

    over = client.post(url, json={"tags": ["extra-1", "extra-2"]})
    known = client.post(url, json={"tags": ["t0", "extra-1"]})  # one new: reaches the cap
    again = client.post(url, json={"tags": ["t1", "extra-1"]})  # nothing new

    assert_422_naming(over, "tags")
    assert known.status_code == 200 and len(known.json["data"]["tags"]) == MAX_TAGS
    assert again.status_code == 200 and len(again.json["data"]["tags"]) == MAX_TAGS


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize("value", HOSTILE_TEXT.values(), ids=HOSTILE_TEXT.keys())
def test_hostile_tags_are_refused_on_create_and_on_the_tags_endpoint(app, client, value):
    assert_422_naming(
        client.post("/api/v1/nodes", json={"mac_address": MAC, "tags": [value]}), "tags"
    )
    node = create(client)

    assert_422_naming(
        client.post(f"/api/v1/nodes/{node['id']}/tags", json={"tags": [value]}), "tags"
    )
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"]["tags"] == []

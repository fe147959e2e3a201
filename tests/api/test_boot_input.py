"""What the boot endpoint and the JSON API refuse: addresses no machine owns, and NUL bytes.

The boot endpoint always answers an iPXE script that echoes why (HTTP 400); the JSON API
answers 422 naming the field. Nothing is stored either way, on both backends.
"""

import dbcheck
import pytest
from sqlalchemy import event

from provisioner.extensions import db

NOT_A_MACHINE = {
    "00:00:00:00:00:00": "the all-zero address",
    "ff:ff:ff:ff:ff:ff": "the broadcast address",
    "01:00:5e:00:00:fb": "a multicast address",  # IPv4 multicast (mDNS)
    "33:33:00:00:00:01": "a multicast address",  # IPv6 multicast
    "03:00:00:00:00:00": "a multicast address",
}
MAC = "52:54:00:b0:07:01"
QUERY_TEXT_FIELDS = ["uuid", "serial", "vendor", "model", "arch", "platform"]


def script_lines(response, status: int) -> list[str]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "#!ipxe"
    assert lines[-1] == "exit"
    return lines


def stored_nodes(app) -> int:
    return dbcheck.count_rows(app.config["SQLALCHEMY_DATABASE_URI"], "nodes")


@pytest.mark.parametrize("mac", NOT_A_MACHINE)
def test_boot_refuses_an_address_no_machine_owns(app, client, mac):
    """Auto-registration is on, yet nothing is registered: the script echoes why."""
    lines = script_lines(client.get("/api/v1/boot", query_string={"mac": mac}), 400)

    assert lines[1] == (
        f"echo provisioner: bad boot request: mac: {mac} is {NOT_A_MACHINE[mac]}, "
        "not the address of a machine's network card"
    )
    assert stored_nodes(app) == 0


@pytest.mark.parametrize("mac", ["FF-FF-FF-FF-FF-FF", "000000000000", "01005E0000FB"])
def test_every_form_of_such_an_address_is_refused(app, client, mac):
    script_lines(client.get("/api/v1/boot", query_string={"mac": mac}), 400)
    assert stored_nodes(app) == 0


#: Each kind through the boot endpoint above; through the API one (every address and form:
#: tests/unit/test_macaddr.py).
@pytest.mark.parametrize("mac", ["01:00:5e:00:00:fb"])
def test_the_api_refuses_to_create_a_node_with_such_an_address(app, client, mac):
    answer = client.post("/api/v1/nodes", json={"mac_address": mac})

    assert answer.status_code == 422
    assert "not the address of a machine's network card" in answer.json["errors"]["mac_address"][0]
    assert stored_nodes(app) == 0


def test_a_report_for_such_an_address_is_a_422(client):
    answer = client.post("/api/v1/report", json={"mac_address": "ff:ff:ff:ff:ff:ff"})

    assert answer.status_code == 422
    assert "broadcast" in answer.json["errors"]["mac_address"][0]


def test_a_locally_administered_unicast_address_is_a_machine(client):
    """Virtual machines use such addresses (the second-lowest bit of the first octet)."""
    lines = script_lines(
        client.get("/api/v1/boot", query_string={"mac": "02:00:00:00:00:01"}), 200
    )
    assert "registered 02:00:00:00:00:01" in lines[1]


def test_the_cli_refuses_such_an_address(app, runner):
    result = runner.invoke(args=["nodes", "add", "01:00:5e:00:00:fb"])

    assert result.exit_code != 0
    assert "01:00:5e:00:00:fb is a multicast address" in result.output
    assert stored_nodes(app) == 0


@pytest.mark.parametrize("name", QUERY_TEXT_FIELDS)
def test_a_nul_byte_in_a_boot_parameter_is_a_400_script(app, client, name):
    """PostgreSQL cannot store NUL in text: refused as the request's fault, as a script."""
    answer = client.get(f"/api/v1/boot?mac={MAC}&{name}=a%00b")

    lines = script_lines(answer, 400)
    assert (
        lines[1] == f"echo provisioner: bad boot request: {name}: NUL characters are not allowed."
    )
    assert stored_nodes(app) == 0


def test_a_nul_byte_for_a_known_machine_is_refused_too(app, client):
    """A known machine's boot that would store a new fact takes the write path."""
    assert client.post("/api/v1/nodes", json={"mac_address": MAC}).status_code == 201

    lines = script_lines(client.get(f"/api/v1/boot?mac={MAC}&serial=S%00N"), 400)

    assert "serial: NUL characters are not allowed." in lines[1]
    rows = dbcheck.rows(app.config["SQLALCHEMY_DATABASE_URI"], "SELECT serial_number FROM nodes")
    assert rows == [(None,)]


def test_a_database_error_during_a_boot_answers_a_script(app, client):
    """Whatever fails while a boot is answered, iPXE gets a script that boots the local disk."""

    def fail(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            raise RuntimeError("simulated failure")

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", fail)
    try:
        lines = script_lines(client.get(f"/api/v1/boot?mac={MAC}"), 500)
    finally:
        event.remove(engine, "before_cursor_execute", fail)

    assert "echo provisioner: internal error; booting the local disk" in lines
    assert stored_nodes(app) == 0

"""Hostile values stored before the validation rules still render as data (through the app)."""

import re

import pytest
import yaml
from paths import EXAMPLE_WORKFLOWS
from sqlalchemy import update
from unit.test_escaping import HOSTILE
from unit.test_escaping import MAC
from unit.test_escaping import assert_syntax
from unit.test_escaping import kickstart
from unit.test_escaping import one_line
from unit.test_escaping import preseed_entries

from provisioner.extensions import db
from provisioner.models import Node

# -- values stored before these rules --------------------------------------------------------

LEGACY = {"hostname": HOSTILE["kickstart-section"], "ip_address": HOSTILE["ipv6-zone"]}
IPXE_COMMANDS = ("#!ipxe", "echo ", "kernel ", "initrd ", "boot ", ":failed", "sleep ", "exit")


def legacy_node(app, workflow_id: str) -> tuple[str, str]:
    """A pending node whose stored hostname and IP no longer pass validation, booted into
    its installer: (iPXE script, report token)."""
    client = app.test_client()
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, "workflow_id": workflow_id})
    assert response.status_code == 201, response.json
    node_id = response.json["data"]["id"]
    client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": "pending"})
    with app.app_context():
        db.session.execute(update(Node).where(Node.id == node_id).values(**LEGACY))
        db.session.commit()
    script = client.get("/api/v1/boot", query_string={"mac": MAC}).get_data(as_text=True)
    token = re.search(r"(?:token=|/seed/)([A-Za-z0-9_-]{43,})", script).group(1)
    return script, token


def fetch_config(app, name: str, token: str) -> str:
    response = app.test_client().get(f"/api/v1/nodes/{MAC}/config/{name}?token={token}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


@pytest.mark.parametrize("workflow_id", ["rocky-9", "debian-12", "ubuntu-24.04"])
def test_hostile_values_already_stored_still_render_escaped(build_app, workflow_id):
    """A node saved before these rules boots and gets configs that keep its values as data."""
    app = build_app(WORKFLOWS_DIR=str(EXAMPLE_WORKFLOWS), REPORT_AUTH="token")

    script, token = legacy_node(app, workflow_id)

    assert all(line.startswith(IPXE_COMMANDS) for line in script.splitlines()), script
    if workflow_id == "rocky-9":
        pytest.importorskip("pykickstart", reason="pykickstart is not installed")
        handler = kickstart(fetch_config(app, "ks.cfg", token))
        assert handler.network.network[0].hostname == one_line(LEGACY["hostname"])
    elif workflow_id == "debian-12":
        kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
        assert " hostname=node-7_%pre_pwned_%end_ " in f"{kernel} ", kernel
        preseed_entries(fetch_config(app, "preseed.cfg", token))
        assert_syntax(fetch_config(app, "hooks.sh", token))
    else:
        user_data = yaml.safe_load(fetch_config(app, "user-data", token))
        assert user_data["autoinstall"]["identity"]["hostname"] == LEGACY["hostname"]

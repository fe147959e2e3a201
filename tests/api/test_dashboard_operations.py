"""The dashboard's operator work: stalled marks, adding a node, the workflows page, one-click
reprovision, "installer served" among the events, and buttons only for allowed moves."""

import re

import pytest

from api.test_dashboard import MAC
from api.test_dashboard import OTHER_MAC
from api.test_dashboard import api_node
from api.test_dashboard import csrf_from
from api.test_dashboard import html
from api.test_dashboard import installing_node
from api.test_dashboard import node_state
from api.test_dashboard import press
from api.test_dashboard import row_of
from provisioner.domain.lifecycle import STATE_NAMES
from provisioner.domain.lifecycle import valid_transitions
from provisioner.timeutil import duration


def test_stalled_nodes_are_marked_in_the_nodes_table(client, clock):
    """Only the stalled node's row carries the mark, linking to the stalled feed."""
    stalled = installing_node(client)
    clock.advance(minutes=61)  # INSTALL_TIMEOUT_MINUTES defaults to 60
    fresh = installing_node(client, OTHER_MAC)

    for path in ("/", "/fragments/nodes"):
        page = html(client.get(path))
        assert 'class="stalled"' in row_of(page, stalled["id"])
        assert 'href="/stalled"' in row_of(page, stalled["id"])
        assert "stalled" not in row_of(page, fresh["id"])


def test_add_node_form_registers_a_node_like_the_api(client):
    data = {
        "csrf_token": csrf_from(client, "/"),
        "mac_address": "52-54-00-AA-00-01",
        "hostname": "new-01",
        "workflow_id": "test-os",
        "tags": "rack9, gpu",
    }
    response = client.post("/nodes", data=data, follow_redirects=True)

    assert "Node 52:54:00:aa:00:01 added" in html(response)
    node = client.get("/api/v1/nodes/52:54:00:aa:00:01").json["data"]
    assert (node["state"], node["hostname"], node["workflow_id"]) == (
        "discovered",
        "new-01",
        "test-os",
    )
    assert sorted(node["tags"]) == ["gpu", "rack9"]
    history = client.get("/api/v1/nodes/52:54:00:aa:00:01/history").json["data"]
    assert [(h["to_state"], h["triggered_by"]) for h in history] == [("discovered", "admin")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mac_address": "not-a-mac"}, "mac_address"),
        ({"mac_address": MAC}, f"A node with MAC {MAC} already exists"),
        ({"mac_address": "52:54:00:aa:00:02", "workflow_id": "nope"}, "Unknown workflow"),
    ],
    ids=["bad-mac", "duplicate", "unknown-workflow"],
)
def test_add_node_refusals_show_the_api_message(client, fields, message):
    api_node(client)
    data = {"csrf_token": csrf_from(client, "/")} | fields
    response = client.post("/nodes", data=data, follow_redirects=True)
    assert message in html(response)
    assert client.get("/api/v1/nodes").json["total"] == 1


def test_workflows_page_lists_each_file_and_its_error(client, workflows_dir):
    (workflows_dir / "broken.yaml").write_text("id: broken\n")
    page = html(client.get("/workflows"))
    assert 'data-workflow="test-os"' in page and "Test OS" in page
    assert "${server}/files/vmlinuz" in page
    broken = page[page.index('data-workflow="broken"') :].split("</tr>")[0]
    assert "error-text" in broken
    assert 'href="/workflows"' in html(client.get("/"))


def active_node(client) -> dict:
    """A node installed and booted (``active``), through the API and reports."""
    node = installing_node(client)
    for event in ("install_complete", "first_boot"):
        assert (
            client.post("/api/v1/report", json={"mac_address": MAC, "event": event}).status_code
            == 200
        )
    assert node_state(client) == "active"
    return node


def test_reprovision_is_one_click_and_the_next_boot_installs(client):
    """Reprovision queues the reinstall: no second "Start install" click."""
    node = active_node(client)

    response = press(client, f"/nodes/{node['id']}/state", state="reprovision")

    assert "State changed from active to pending: its next PXE boot installs test-os" in html(
        response
    )
    history = client.get(f"/api/v1/nodes/{MAC}/history").json["data"]
    assert [h["to_state"] for h in history[-2:]] == ["reprovision", "pending"]
    assert "kernel " in client.get(f"/api/v1/boot?mac={MAC}").get_data(as_text=True)
    assert node_state(client) == "installing"


def test_installer_served_shows_among_the_events(client):
    """The boot that served the installer is in the events panel, in time order."""
    node = api_node(client, workflow_id="test-os")
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "pending"})
    client.get(f"/api/v1/boot?mac={MAC}")
    report = {"mac_address": MAC, "event": "install_progress", "progress": 30}
    client.post("/api/v1/report", json=report)

    page = html(client.get(f"/fragments/nodes/{node['id']}"))
    timeline = page[page.index('class="timeline"') :].split("</ol>")[0]
    served = timeline.index("installer served")
    assert timeline.index("install progress") < served  # newest first
    assert "installer served: workflow test-os" in timeline
    assert 'Events <span class="muted">(1)' in page  # the count is of events still


def buttons(page: str) -> dict[str, bool]:
    """Each state button on a node page: enabled or not."""
    found = re.findall(r'<button type="submit" name="action" value="(\w+)"([^>]*)>', page)
    return {
        value: "disabled" not in attributes for value, attributes in found if value in STATE_NAMES
    }


@pytest.mark.parametrize("state", ["discovered", "pending", "active", "retired"])
def test_buttons_for_moves_the_lifecycle_forbids_are_disabled(client, state):
    """The page asks the lifecycle: enabled exactly where valid_transitions allows."""
    node = active_node(client) if state == "active" else api_node(client)
    if state in ("pending", "retired"):
        press(client, f"/nodes/{node['id']}/state", state=state)
    assert node_state(client) == state

    shown = buttons(html(client.get(f"/nodes/{node['id']}")))

    assert shown == {target: target in valid_transitions(state) for target in shown}
    assert set(shown) == {"pending", "reprovision", "retired"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12, "12 s"), (7048.6 * 60, "4 d 21 h"), (3 * 3600 + 300, "3 h 5 min"), (86400, "1 d")],
)
def test_durations_read_as_people_read_them(seconds, text):
    assert duration(seconds) == text


def test_stalled_command_prints_durations_in_days_and_hours(runner, client):
    """The install started on the test clock (January 2026); the CLI reads the wall clock."""
    installing_node(client)
    result = runner.invoke(args=["stalled"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if MAC in line)
    assert re.search(r"  \d+ d( \d+ h)?  ", row), row
    assert " m " not in row

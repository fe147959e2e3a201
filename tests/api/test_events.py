"""Node reports and their effect: every event from every state, retries, legacy fields, facts."""

import dbcheck
import pytest
from eventtable import FITS
from eventtable import REPORTED

MAC = "52:54:00:12:34:56"
PEER = "127.0.0.1"


@pytest.fixture
def app_config(app_config: dict) -> dict:
    """Pin the attempt budget the expected messages are written for."""
    app_config["MAX_INSTALL_ATTEMPTS"] = 3
    return app_config


def create_node(client, mac: str = MAC, **fields) -> dict:
    """Register a node through the API; it starts ``discovered``."""
    response = client.post("/api/v1/nodes", json={"mac_address": mac, **fields})
    assert response.status_code == 201, response.json
    return response.json["data"]


def force_state(client, ref: str, state: str) -> None:
    """Put a node into ``state`` the way an operator would."""
    response = client.patch(f"/api/v1/nodes/{ref}/state", json={"state": state, "force": True})
    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == state


def node_in(client, state: str, mac: str = MAC, **fields) -> dict:
    """A new node put into ``state``."""
    node = create_node(client, mac, **fields)
    if state != "discovered":
        force_state(client, node["id"], state)
    return node


def report(client, mac: str = MAC, **body):
    """POST a report for ``mac`` and check it was accepted."""
    response = client.post("/api/v1/report", json={"mac_address": mac, **body})
    assert response.status_code == 200, response.json
    assert response.json["success"] is True
    return response.json


def get_node(client, ref: str) -> dict:
    response = client.get(f"/api/v1/nodes/{ref}")
    assert response.status_code == 200, response.json
    return response.json["data"]


def events(client, ref: str) -> list[dict]:
    """The node's events, newest first."""
    response = client.get(f"/api/v1/nodes/{ref}/events?limit=500")
    assert response.status_code == 200, response.json
    return response.json["data"]


def history(client, ref: str) -> list[dict]:
    """The node's state log, oldest first."""
    response = client.get(f"/api/v1/nodes/{ref}/history")
    assert response.status_code == 200, response.json
    return response.json["data"]


# -- every event from every state ---------------------------------------------------------


#: A pair of each kind the table holds: moves, staying put, progress, a counted failure,
#: log-only events and ignored ones. The rule itself is checked on every pair without the app
#: (tests/unit/test_report_rules.py); these prove the endpoint applies and records it.
WIRED = [
    ("install_started", "pending"),
    ("install_started", "installing"),
    ("install_progress", "installing"),
    ("install_complete", "installing"),
    ("install_failed", "installing"),
    ("first_boot", "installed"),
    ("heartbeat", "retired"),
    ("boot_started", "active"),
    ("install_complete", "pending"),
    ("first_boot", "retired"),
]


@pytest.mark.parametrize(("event", "state"), WIRED)
def test_event_from_state(client, event, state):
    """Each reported event moves, logs or ignores as the table says, and is always recorded."""
    node = node_in(client, state)
    logs_before = history(client, node["id"])
    body = {"event": event, "message": f"{event} from the field"}
    if event == "install_progress":
        body["progress"] = 40

    answer = report(client, **body)

    ignored = (state, f"ignored: node is {state}", None)
    expected_state, expected_effect, expected_message = FITS.get((event, state), ignored)
    if expected_message is None:
        assert "ignored" in answer["message"], answer["message"]
        assert f"node is {state}" in answer["message"], answer["message"]
    else:
        assert answer["message"] == expected_message
    assert answer["data"]["state"] == expected_state
    assert get_node(client, node["id"])["state"] == expected_state
    newest = events(client, node["id"])[0]
    assert (newest["event_type"], newest["effect"]) == (event, expected_effect)
    assert newest["message"] == f"{event} from the field"
    logs_after = history(client, node["id"])
    if expected_state == state:
        assert logs_after == logs_before
    else:
        assert len(logs_after) == len(logs_before) + 1
        entry = logs_after[-1]
        assert (entry["from_state"], entry["to_state"]) == (state, expected_state)
        assert entry["triggered_by"] == "node_report"


# -- install failures and retries ---------------------------------------------------------


def fail_install(client, error: str, mac: str = MAC) -> dict:
    """Start an install from pending and report it failed."""
    assert report(client, mac, event="install_started")["data"]["state"] == "installing"
    return report(client, mac, event="install_failed", message=error)


def test_install_failed_retries_then_gives_up_at_max_attempts(client):
    """Failures go back to pending while attempts remain, then stop in install_failed."""
    node_in(client, "pending")

    first = fail_install(client, "disk not found")
    assert first["message"] == "Installation failed (attempt 1), will retry"
    assert (first["data"]["state"], first["data"]["install_attempts"]) == ("pending", 1)

    second = fail_install(client, "disk not found again")
    assert second["message"] == "Installation failed (attempt 2), will retry"
    assert (second["data"]["state"], second["data"]["install_attempts"]) == ("pending", 2)

    third = fail_install(client, "disk gone")
    assert third["message"] == "Installation failed after 3 attempts"
    assert (third["data"]["state"], third["data"]["install_attempts"]) == ("install_failed", 3)
    effects = [
        event["effect"] for event in events(client, MAC) if event["event_type"] == "install_failed"
    ]
    assert effects == [
        "installing→install_failed (attempt 3 of 3)",
        "installing→pending (attempt 2 of 3)",
        "installing→pending (attempt 1 of 3)",
    ]


def test_max_install_attempts_comes_from_config(app_config, request):
    """``MAX_INSTALL_ATTEMPTS`` sets how many failures end the episode."""
    app_config["MAX_INSTALL_ATTEMPTS"] = 2
    client = request.getfixturevalue("client")
    node_in(client, "pending")

    assert fail_install(client, "boom")["message"] == "Installation failed (attempt 1), will retry"
    final = fail_install(client, "boom")
    assert final["message"] == "Installation failed after 2 attempts"
    assert final["data"]["state"] == "install_failed"


def test_install_failed_after_the_last_attempt_is_ignored(client):
    """Once in install_failed, a late failure report is recorded but counts nothing."""
    node_in(client, "pending")
    for _ in range(3):
        fail_install(client, "boom")

    late = report(client, event="install_failed", message="late")

    assert late["data"]["state"] == "install_failed"
    assert late["data"]["install_attempts"] == 3
    assert events(client, MAC)[0]["effect"] == "ignored: node is install_failed"


def test_failure_message_is_stored_as_last_install_error(client):
    """The failed report's message becomes the node's last_install_error and the log comment."""
    node_in(client, "installing")

    answer = report(client, event="install_failed", message="no bootable disk")

    assert answer["data"]["last_install_error"] == "no bootable disk"
    assert get_node(client, MAC)["last_install_error"] == "no bootable disk"
    newest = events(client, MAC)[0]
    assert (newest["message"], newest["status"]) == ("no bootable disk", "failed")
    assert "no bootable disk" in history(client, MAC)[-1]["comment"]


def test_operator_retry_after_install_failed_starts_a_new_episode(client):
    """Back to pending by an operator, the attempt counter starts again from zero."""
    node_in(client, "pending")
    for _ in range(3):
        fail_install(client, "boom")
    force_state(client, MAC, "pending")

    answer = fail_install(client, "boom")

    assert answer["message"] == "Installation failed (attempt 1), will retry"


# -- progress, first boot ------------------------------------------------------------------


def test_install_progress_is_kept_on_the_node(client):
    """Each progress report sets the node's current progress."""
    node_in(client, "pending")
    report(client, event="install_started")

    for percent in (10, 55, 90):
        answer = report(client, event="install_progress", progress=percent)
        assert answer["message"] == f"Installation progress: {percent}%"
        assert answer["data"]["progress"] == percent
    assert get_node(client, MAC)["progress"] == 90
    assert [event["progress"] for event in events(client, MAC)[:3]] == [90, 55, 10]


def test_entering_installing_resets_progress(client):
    """A new attempt starts from 0, whatever the last one reached."""
    node_in(client, "pending")
    report(client, event="install_started")
    report(client, event="install_progress", progress=70)
    report(client, event="install_failed", message="boom")
    assert get_node(client, MAC)["progress"] == 70

    answer = report(client, event="install_started")

    assert answer["data"]["state"] == "installing"
    assert answer["data"]["progress"] == 0


def test_entering_installing_by_boot_resets_progress(client):
    """The boot that serves the installer also starts the attempt from 0."""
    node_in(client, "pending", workflow_id="test-os")
    report(client, event="heartbeat")
    force_state(client, MAC, "installing")
    report(client, event="install_progress", progress=80)
    force_state(client, MAC, "pending")

    response = client.get(f"/api/v1/boot?mac={MAC}")

    assert response.status_code == 200
    node = get_node(client, MAC)
    assert (node["state"], node["progress"]) == ("installing", 0)


def test_first_boot_metadata_is_kept_in_the_state_log(client):
    """OS version and kernel reported at first boot land on the installed→active entry."""
    node_in(client, "installed")
    metadata = {"os_version": "Debian 12.5", "kernel": "6.1.0-18-amd64", "disks": [1, 2]}

    answer = report(client, event="first_boot", event_metadata=metadata)

    assert answer["data"]["state"] == "active"
    entry = history(client, MAC)[-1]
    assert (entry["from_state"], entry["to_state"]) == ("installed", "active")
    assert entry["metadata"] == metadata
    assert events(client, MAC)[0]["metadata"] == metadata


# -- legacy installation_status ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "legacy", "event", "after", "message"),
    [
        (
            "pending",
            {"installation_status": "started"},
            "install_started",
            "installing",
            "Installation started",
        ),
        (
            "installing",
            {"installation_status": "progress", "installation_progress": 35},
            "install_progress",
            "installing",
            "Installation progress: 35%",
        ),
        (
            "installing",
            {"installation_status": "complete"},
            "install_complete",
            "installed",
            "Installation completed",
        ),
        (
            "installing",
            {"installation_status": "failed", "installation_error": "mirror unreachable"},
            "install_failed",
            "pending",
            "Installation failed (attempt 1), will retry",
        ),
    ],
)
def test_legacy_installation_status(client, state, legacy, event, after, message):
    """``installation_status`` drives the same logic and is recorded as the matching event."""
    node_in(client, state)

    answer = report(client, **legacy)

    assert answer["message"] == message
    assert answer["data"]["state"] == after
    newest = events(client, MAC)[0]
    assert newest["event_type"] == event
    if "installation_progress" in legacy:
        assert newest["progress"] == 35
        assert answer["data"]["progress"] == 35
    if "installation_error" in legacy:
        assert newest["message"] == "mirror unreachable"
        assert answer["data"]["last_install_error"] == "mirror unreachable"


def test_installation_progress_is_an_alias_of_progress(client):
    """``installation_progress`` works with the new ``event`` field too."""
    node_in(client, "installing")

    answer = report(client, event="install_progress", installation_progress=62)

    assert answer["message"] == "Installation progress: 62%"
    assert answer["data"]["progress"] == 62
    assert events(client, MAC)[0]["progress"] == 62


def test_report_without_event_only_updates_the_node(client, clock):
    """No event and no legacy status: facts and last_seen_at change, no event is written."""
    node_in(client, "active")
    seen = clock.advance(minutes=5)

    answer = report(client, hostname="web-01")

    assert answer["message"] == "Status reported successfully"
    node = get_node(client, MAC)
    assert node["hostname"] == "web-01"
    assert node["last_seen_at"] == seen.isoformat()
    assert events(client, MAC) == []
    assert node["last_event"] is None


# -- what a report stores on the node ------------------------------------------------------


def test_hardware_fields_are_stored_and_the_event_keeps_the_peer_address(client):
    """Reported facts update the node; the event's address is the one the report came from."""
    node_in(client, "installing")
    facts = {
        "ip_address": "10.20.30.40",
        "hostname": "rack1-node7",
        "vendor": "Supermicro",
        "model": "SYS-1029P",
        "serial_number": "S123456",
        "system_uuid": "4c4c4544-0042-3510-8052-b4c04f4e3632",
    }

    answer = report(client, event="heartbeat", **facts)

    node = get_node(client, MAC)
    assert {key: node[key] for key in facts} == facts
    assert {key: answer["data"][key] for key in facts} == facts
    assert events(client, MAC)[0]["ip_address"] == PEER


def test_absent_hardware_fields_are_left_alone(client):
    """A report that omits a fact does not erase what the node already has."""
    node_in(client, "active", hostname="keep-me", vendor="Dell")

    report(client, event="heartbeat", model="R640")

    node = get_node(client, MAC)
    assert (node["hostname"], node["vendor"], node["model"]) == ("keep-me", "Dell", "R640")


@pytest.mark.parametrize("event", REPORTED)
def test_every_report_updates_last_seen_at(client, clock, event):
    """Whatever the event, and whether it fits or not, the node was seen now."""
    node_in(client, "active")
    seen = clock.advance(hours=3, seconds=1.5)

    answer = report(client, event=event)

    assert answer["data"]["last_seen_at"] == seen.isoformat()
    assert get_node(client, MAC)["last_seen_at"] == seen.isoformat()


def test_node_responses_carry_progress_and_last_event(client, clock):
    """The node, in the report answer, its own page and the list, shows progress and last event."""
    node_in(client, "installing")
    at = clock.advance(seconds=30)

    answer = report(client, event="install_progress", progress=45, status="in_progress")

    expected = {"type": "install_progress", "status": "in_progress", "at": at.isoformat()}
    assert answer["data"]["progress"] == 45
    assert answer["data"]["last_event"] == expected
    assert get_node(client, MAC)["last_event"] == expected
    listed = client.get("/api/v1/nodes").json["data"]
    assert [(node["progress"], node["last_event"]) for node in listed] == [(45, expected)]


def test_new_node_has_no_last_event(client):
    """A node that never reported has ``last_event`` null."""
    node = create_node(client)

    assert node["last_event"] is None
    assert get_node(client, MAC)["last_event"] is None


def test_report_answer_shows_the_node_as_stored(client, clock):
    """The node in the report's answer is the node a GET returns right after."""
    node_in(client, "active")
    clock.advance(minutes=1)

    answer = report(client, event="heartbeat", hostname="web-02")

    assert answer["data"] == get_node(client, MAC)


# -- events written by the server ----------------------------------------------------------


def test_boot_auto_registration_writes_a_discovered_event(client):
    """A machine seen for the first time is registered, and that is an event too."""
    response = client.get("/api/v1/boot?mac=52-54-00-99-88-77")
    assert response.status_code == 200

    recorded = events(client, "52:54:00:99:88:77")

    assert len(recorded) == 1
    assert recorded[0]["event_type"] == "discovered"
    assert recorded[0]["ip_address"] == PEER
    assert get_node(client, "52:54:00:99:88:77")["last_event"]["type"] == "discovered"


def test_deleting_a_node_deletes_its_events(app, client):
    """Events go with their node; other nodes' events stay."""
    node = node_in(client, "installing")
    other = node_in(client, "active", mac="52:54:00:00:00:02")
    for _ in range(3):
        report(client, event="heartbeat")
    report(client, "52:54:00:00:00:02", event="heartbeat")

    response = client.delete(f"/api/v1/nodes/{node['id']}")
    assert response.status_code == 200, response.json

    rows = dbcheck.rows(app.config["SQLALCHEMY_DATABASE_URI"], "SELECT node_id FROM node_events")
    assert rows == [(other["id"],)]
    assert client.get(f"/api/v1/nodes/{node['id']}/events").status_code == 404

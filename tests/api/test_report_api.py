"""``POST /api/v1/report`` as a contract: errors write nothing, retries are idempotent."""

import json

import dbcheck
import pytest
from apihelpers import node_in_state

from provisioner.domain.events import REPORTED_TYPES

MAC = "52:54:00:aa:bb:01"
OTHER_MAC = "52:54:00:aa:bb:02"


def create_node(client, mac: str = MAC, state: str = "installing") -> dict:
    """A node registered through the API and put into ``state``."""
    return node_in_state(client, mac, state)


@pytest.fixture
def node(client) -> dict:
    """An installing node, so any event could move it."""
    return create_node(client)


@pytest.fixture
def rows(app):
    """Count the committed rows of a table in the app's database, read directly."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]

    def count(table: str) -> int:
        return dbcheck.count_rows(url, table)

    return count


@pytest.fixture
def snapshot(client, rows):
    """What a report could change: event and state log rows, and every node as the API shows it."""

    def take() -> dict:
        nodes = client.get("/api/v1/nodes").json["data"]
        return {
            "events": rows("node_events"),
            "logs": rows("node_state_logs"),
            "nodes": nodes,
        }

    return take


def post(client, body):
    return client.post("/api/v1/report", json=body)


# -- errors write nothing ------------------------------------------------------------------

BAD_BODIES = [
    ({"mac_address": "52:54:00:aa:bb", "event": "heartbeat"}, "mac_address"),
    ({"mac_address": "not-a-mac", "event": "heartbeat"}, "mac_address"),
    ({"event": "heartbeat"}, "mac_address"),
    ({"mac_address": MAC, "event": "rebooted"}, "event"),
    ({"mac_address": MAC, "event": "install_progress", "progress": 120}, "progress"),
    ({"mac_address": MAC, "event": "install_progress", "progress": -1}, "progress"),
    ({"mac_address": MAC, "event": "install_progress", "progress": "half"}, "progress"),
    (
        {"mac_address": MAC, "installation_status": "progress", "installation_progress": -1},
        "installation_progress",
    ),
    ({"mac_address": MAC, "installation_status": "done"}, "installation_status"),
    (
        {"mac_address": MAC, "event": "first_boot", "event_metadata": ["os", "debian"]},
        "event_metadata",
    ),
    ({"mac_address": MAC, "event": "first_boot", "event_metadata": "debian"}, "event_metadata"),
    (
        {"mac_address": MAC, "event": "first_boot", "event_metadata": {"blob": "x" * 16 * 1024}},
        "event_metadata",
    ),
    ({"mac_address": MAC, "event": "heartbeat", "status": "great"}, "status"),
    ({"mac_address": MAC, "event": "heartbeat", "ip_address": "10.0.0.300"}, "ip_address"),
    ({"mac_address": MAC, "event": "heartbeat", "message": "x" * 5000}, "message"),
]


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_invalid_body_is_422_naming_the_field_and_writes_nothing(
    client, clock, node, snapshot, body, field
):
    """Each invalid field is named in the JSON error; nothing about the node changes."""
    before = snapshot()
    clock.advance(minutes=1)

    response = post(client, body)

    assert response.status_code == 422
    assert response.is_json
    assert response.json["success"] is False
    assert field in response.json["errors"], response.json
    assert field in response.json["message"]
    assert snapshot() == before


def test_every_bad_field_is_named(client, node, snapshot):
    """Several bad fields in one body are reported together."""
    before = snapshot()

    response = post(client, {"mac_address": "zz", "event": "nope", "progress": 120})

    assert response.status_code == 422
    assert set(response.json["errors"]) == {"mac_address", "event", "progress"}
    assert snapshot() == before


def test_metadata_just_under_the_limit_is_accepted(client, node):
    """16 KiB is a bound, not a ban on metadata: a large but allowed object is stored."""
    metadata = {"blob": "x" * (15 * 1024)}

    response = post(client, {"mac_address": MAC, "event": "heartbeat", "event_metadata": metadata})

    assert response.status_code == 200, response.json
    events = client.get(f"/api/v1/nodes/{MAC}/events").json["data"]
    assert events[0]["metadata"] == metadata


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"mac_address": "52:54:00:aa:bb:01", "event": ', "application/json"),
        ("mac_address=52:54:00:aa:bb:01&event=heartbeat", "application/x-www-form-urlencoded"),
        ('{"mac_address": "52:54:00:aa:bb:01", "event": "heartbeat"}', "text/plain"),
        ('[{"mac_address": "52:54:00:aa:bb:01", "event": "heartbeat"}]', "application/json"),
        ('"52:54:00:aa:bb:01"', "application/json"),
    ],
    ids=["not-json", "form", "wrong-content-type", "array", "string"],
)
def test_body_that_is_not_a_json_object_is_422_and_writes_nothing(
    client, clock, node, snapshot, data, content_type
):
    """Malformed JSON, a non-JSON content type or a JSON non-object is an error about ``body``."""
    before = snapshot()
    clock.advance(minutes=1)

    response = client.post("/api/v1/report", data=data, content_type=content_type)

    assert response.status_code == 422
    assert response.is_json
    assert "body" in response.json["errors"], response.json
    assert snapshot() == before


def test_unknown_mac_is_404_naming_the_mac_and_writes_nothing(client, node, snapshot):
    """A report from a machine the server does not know is refused, and the MAC is named."""
    before = snapshot()

    response = post(client, {"mac_address": "52-54-00-FF-EE-DD", "event": "install_complete"})

    assert response.status_code == 404
    assert response.is_json
    assert response.json["success"] is False
    assert "52:54:00:ff:ee:dd" in response.json["message"]
    assert snapshot() == before


def test_unknown_fields_are_ignored(client, node, rows):
    """Scripts in the field send extra keys; they do not make the report fail."""
    response = post(
        client,
        {"mac_address": MAC, "event": "heartbeat", "uptime": 1234, "agent": {"version": "2"}},
    )

    assert response.status_code == 200, response.json
    assert response.json["message"] == "Heartbeat received"
    assert rows("node_events") == 1


@pytest.mark.parametrize("form", ["52-54-00-AA-BB-01", "525400AABB01", "52:54:00:AA:BB:01"])
def test_any_accepted_mac_form_finds_the_node(client, node, form):
    """The MAC is normalised before the node is looked up."""
    response = post(client, {"mac_address": form, "event": "install_complete"})

    assert response.status_code == 200, response.json
    assert response.json["data"]["id"] == node["id"]
    assert response.json["data"]["state"] == "installed"


def test_event_that_does_not_fit_is_200_and_recorded(client, rows):
    """An installer must not retry forever: a misfit is answered 200 and kept, marked ignored."""
    create_node(client, state="active")

    response = post(client, {"mac_address": MAC, "event": "install_complete"})

    assert response.status_code == 200
    assert response.json["success"] is True
    assert response.json["data"]["state"] == "active"
    assert "ignored" in response.json["message"]
    assert rows("node_events") == 1
    event = client.get(f"/api/v1/nodes/{MAC}/events").json["data"][0]
    assert event["effect"] == "ignored: node is active"


def test_success_envelope(client, node):
    """A good report answers ``{success, data: <node>, message}``."""
    response = post(client, {"mac_address": MAC, "event": "heartbeat"})

    assert response.status_code == 200
    assert set(response.json) == {"success", "data", "message"}
    assert response.json["data"]["mac_address"] == MAC


# -- idempotency ---------------------------------------------------------------------------


def test_repeated_event_id_returns_the_first_response_and_writes_nothing(
    client, clock, node, rows, snapshot
):
    """curl --retry re-sends the POST: the retry gets the same answer and changes nothing."""
    body = {"mac_address": MAC, "event": "install_complete", "event_id": "run-42-complete"}
    first = post(client, body)
    assert first.status_code == 200, first.json
    after_first = snapshot()
    clock.advance(minutes=2)

    again = post(client, body)

    assert again.status_code == 200
    assert again.json == first.json
    assert snapshot() == after_first
    assert rows("node_events") == 1
    history = client.get(f"/api/v1/nodes/{MAC}/history").json["data"]
    assert [entry["to_state"] for entry in history].count("installed") == 1


def test_repeated_event_id_with_a_different_body_still_replays(client, node, snapshot):
    """The event id alone identifies the report; a changed retry does not apply twice."""
    first = post(client, {"mac_address": MAC, "event": "install_failed", "event_id": "e-1"})
    assert first.json["data"]["state"] == "pending"
    before = snapshot()

    again = post(client, {"mac_address": MAC, "event": "heartbeat", "event_id": "e-1"})

    assert again.status_code == 200
    assert again.json == first.json
    assert snapshot() == before


def test_ignored_event_is_replayed_too(client, node, rows):
    """A retry of a report that was ignored gets the same 'ignored' answer, once recorded."""
    create_node(client, OTHER_MAC, state="active")
    body = {"mac_address": OTHER_MAC, "event": "install_started", "event_id": "late-start"}
    first = post(client, body)

    again = post(client, body)

    assert again.json == first.json
    assert "ignored" in again.json["message"]
    assert rows("node_events") == 1


def test_same_event_id_on_another_node_is_independent(client, node, rows):
    """Event ids are per node: two machines may pick the same one."""
    create_node(client, OTHER_MAC, state="installing")
    body = {"event": "install_complete", "event_id": "complete"}

    first = post(client, {"mac_address": MAC, **body})
    second = post(client, {"mac_address": OTHER_MAC, **body})

    assert first.status_code == second.status_code == 200
    assert first.json["data"]["id"] != second.json["data"]["id"]
    assert first.json["data"]["state"] == second.json["data"]["state"] == "installed"
    assert rows("node_events") == 2


def test_different_event_ids_are_separate_reports(client, node, rows):
    """Two event ids are two reports, each recorded."""
    post(client, {"mac_address": MAC, "event": "heartbeat", "event_id": "hb-1"})
    post(client, {"mac_address": MAC, "event": "heartbeat", "event_id": "hb-2"})

    assert rows("node_events") == 2


def test_reports_without_event_id_are_never_deduplicated(client, node, rows):
    """Without an event id every report counts, even identical ones."""
    for _ in range(3):
        assert post(client, {"mac_address": MAC, "event": "heartbeat"}).status_code == 200

    assert rows("node_events") == 3


def test_event_id_is_shown_on_the_event(client, node):
    """The client's id is kept with the event so an operator can match it to a log line."""
    post(client, {"mac_address": MAC, "event": "heartbeat", "event_id": "abc-123"})

    event = client.get(f"/api/v1/nodes/{MAC}/events").json["data"][0]

    assert event["event_id"] == "abc-123"


def test_report_body_round_trips_as_sent_by_curl(client, node):
    """The exact bytes a field script sends with ``curl -H 'Content-Type: application/json'``."""
    data = json.dumps({"mac_address": MAC.upper(), "installation_status": "complete"})

    response = client.post(
        "/api/v1/report", data=data, headers={"Content-Type": "application/json; charset=utf-8"}
    )

    assert response.status_code == 200, response.json
    assert response.json["message"] == "Installation completed"


# -- the answer is the node as stored, whichever way the report was written -------------------


#: Every kind of write a report makes, each event once: a move through the ORM (start,
#: completion, first boot), a counted failure, stored progress, log-only and ignored events
#: and status-only reports written with plain statements. Which event does what from which
#: state is the report rule's, checked on every pair in tests/unit/test_report_rules.py.
ANSWER_CASES = [
    ("pending", "install_started"),
    ("installing", "install_complete"),
    ("installed", "first_boot"),
    ("installing", "install_failed"),
    ("installing", "install_progress"),
    ("installing", "heartbeat"),
    ("active", "boot_started"),
    ("discovered", "install_complete"),
    ("pending", "install_progress"),
    ("active", None),
    ("installing", None),
]


def test_answer_cases_cover_every_reported_event():
    assert {event for _, event in ANSWER_CASES} == {*REPORTED_TYPES, None}


@pytest.mark.parametrize(("state", "event"), ANSWER_CASES)
def test_answer_is_the_node_as_the_api_then_shows_it(client, state, event):
    """A report that moves the node goes through the ORM; one that does not is written with
    plain statements. Either way its answer is the node exactly as stored afterwards."""
    response = client.post(
        "/api/v1/nodes", json={"mac_address": MAC, "tags": ["rack-2", "gpu"], "model": "R640"}
    )
    node_id = response.json["data"]["id"]
    if state != "discovered":
        client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": state, "force": True})
    body = {"mac_address": MAC, "hostname": "web-7", "ip_address": "10.0.0.7", "progress": 40}
    if event is not None:
        body["event"] = event
    answer = post(client, body)
    assert answer.status_code == 200, answer.json
    shown = client.get(f"/api/v1/nodes/{node_id}").json["data"]
    assert answer.json["data"] == shown
    assert shown["tags"] == ["gpu", "rack-2"]
    assert shown["hostname"] == "web-7"

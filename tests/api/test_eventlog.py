"""Reading events: a node's log newest first, and the cursor-based stream across all nodes."""

from datetime import datetime
from datetime import timedelta

import pytest
from apihelpers import node_in_state

MAC = "52:54:00:cc:00:01"
OTHER_MAC = "52:54:00:cc:00:02"


def create_node(client, mac: str = MAC, state: str = "active") -> dict:
    """A node registered through the API and put into ``state``."""
    return node_in_state(client, mac, state)


def report(client, mac: str = MAC, **body) -> None:
    response = client.post("/api/v1/report", json={"mac_address": mac, **body})
    assert response.status_code == 200, response.json


def node_events(client, ref: str = MAC, query: str = "") -> dict:
    """The JSON answer of ``GET /api/v1/nodes/<ref>/events``, checked to be a 200."""
    response = client.get(f"/api/v1/nodes/{ref}/events{query}")
    assert response.status_code == 200, response.json
    return response.json


def stream(client, query: str = "") -> dict:
    """The JSON answer of ``GET /api/v1/events``, checked to be a 200."""
    response = client.get(f"/api/v1/events{query}")
    assert response.status_code == 200, response.json
    return response.json


# -- a node's events ----------------------------------------------------------------------


def test_node_events_are_newest_first(client, clock):
    """The latest report is listed first."""
    create_node(client)
    for event in ("boot_started", "heartbeat", "install_started", "first_boot"):
        clock.advance(seconds=1)
        report(client, event=event)

    answer = node_events(client)

    assert [item["event_type"] for item in answer["data"]] == [
        "first_boot",
        "install_started",
        "heartbeat",
        "boot_started",
    ]
    assert answer["total"] == 4
    times = [item["created_at"] for item in answer["data"]]
    assert times == sorted(times, reverse=True)


def test_equal_timestamps_are_ordered_newest_insert_first(client):
    """With the clock standing still, the order is still stable: highest id first."""
    create_node(client)
    for number in range(6):
        report(client, event="heartbeat", message=f"beat {number}")

    items = node_events(client)["data"]

    assert len({item["created_at"] for item in items}) == 1
    ids = [item["id"] for item in items]
    assert ids == sorted(ids, reverse=True)
    assert [item["message"] for item in items] == [f"beat {n}" for n in reversed(range(6))]


def test_pages_with_equal_timestamps_neither_repeat_nor_skip(client):
    """Offset paging over tied timestamps gives every event exactly once."""
    create_node(client)
    for number in range(7):
        report(client, event="heartbeat", message=f"beat {number}")
    everything = [item["id"] for item in node_events(client, query="?limit=500")["data"]]

    pages = [node_events(client, query=f"?limit=3&offset={offset}") for offset in (0, 3, 6, 9)]

    assert [len(page["data"]) for page in pages] == [3, 3, 1, 0]
    assert {page["total"] for page in pages} == {7}
    assert [item["id"] for page in pages for item in page["data"]] == everything


def test_default_limit_is_50(client):
    """Without ``limit`` a page holds at most 50 events; ``total`` counts them all."""
    create_node(client)
    for _ in range(55):
        report(client, event="heartbeat")

    answer = node_events(client)

    assert len(answer["data"]) == 50
    assert answer["total"] == 55


@pytest.mark.parametrize("limit", [1, 500])
def test_limit_bounds_are_accepted(client, limit):
    """1 and 500 are the smallest and largest pages."""
    create_node(client)
    report(client, event="heartbeat")
    report(client, event="heartbeat")

    answer = node_events(client, query=f"?limit={limit}")

    assert len(answer["data"]) == min(limit, 2)


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=-5", "limit"),
        ("?limit=many", "limit"),
        ("?offset=-1", "offset"),
        ("?event_type=rebooted", "event_type"),
    ],
)
def test_bad_query_is_422_naming_the_parameter(client, query, field):
    """Out-of-range paging and unknown event types are refused, naming the parameter."""
    create_node(client)

    response = client.get(f"/api/v1/nodes/{MAC}/events{query}")

    assert response.status_code == 422
    assert field in response.json["errors"], response.json


def test_event_type_filter(client):
    """``event_type`` keeps only that kind; ``total`` counts only those."""
    create_node(client, state="installing")
    report(client, event="install_progress", progress=10)
    report(client, event="heartbeat")
    report(client, event="install_progress", progress=20)
    report(client, event="install_complete")

    answer = node_events(client, query="?event_type=install_progress")

    assert [(item["event_type"], item["progress"]) for item in answer["data"]] == [
        ("install_progress", 20),
        ("install_progress", 10),
    ]
    assert answer["total"] == 2


@pytest.mark.parametrize("event_type", ["discovered", "install_timeout"])
def test_server_written_event_types_are_valid_filters(client, event_type):
    """The two types the server writes may be asked for too."""
    create_node(client)

    assert node_events(client, query=f"?event_type={event_type}")["data"] == []


def test_events_of_other_nodes_are_not_listed(client):
    """A node's log holds only its own events."""
    create_node(client)
    create_node(client, OTHER_MAC)
    report(client, event="heartbeat")
    report(client, OTHER_MAC, event="boot_started")

    answer = node_events(client)

    assert [item["event_type"] for item in answer["data"]] == ["heartbeat"]
    assert answer["total"] == 1


@pytest.mark.parametrize("ref", ["by-id", "52-54-00-CC-00-01", "525400cc0001"])
def test_node_is_found_by_id_or_any_mac_form(client, ref):
    """The URL may name the node by id or by MAC in any accepted form."""
    node = create_node(client)
    report(client, event="heartbeat")

    answer = node_events(client, node["id"] if ref == "by-id" else ref)

    assert [item["node_id"] for item in answer["data"]] == [node["id"]]


@pytest.mark.parametrize("ref", ["52:54:00:00:00:99", "0f1e2d3c-0000-4000-8000-000000000000"])
def test_unknown_node_is_404(client, ref):
    """Asking for the events of a node that does not exist is a JSON 404."""
    create_node(client)

    response = client.get(f"/api/v1/nodes/{ref}/events")

    assert response.status_code == 404
    assert response.json["success"] is False


def test_event_item_fields(client, clock):
    """Every field of an event, with metadata as an object and an ISO 8601 time with offset."""
    node = create_node(client, state="installing")
    at = clock.advance(seconds=1, microseconds=250_000)
    metadata = {"stage": "partitioning", "disks": ["sda", "sdb"], "nested": {"ok": True}}

    report(
        client,
        event="install_progress",
        status="in_progress",
        message="partitioning disks",
        progress=15,
        event_metadata=metadata,
        ip_address="10.1.2.3",
    )

    (item,) = node_events(client)["data"]
    assert {
        "id",
        "node_id",
        "event_type",
        "status",
        "message",
        "progress",
        "metadata",
        "ip_address",
        "effect",
        "created_at",
    } <= set(item)
    assert isinstance(item["id"], int)
    assert item["node_id"] == node["id"]
    assert item["event_type"] == "install_progress"
    assert item["status"] == "in_progress"
    assert item["message"] == "partitioning disks"
    assert item["progress"] == 15
    assert item["metadata"] == metadata
    assert item["ip_address"] == "127.0.0.1"
    assert item["effect"] == "progress 15%"
    assert item["created_at"] == "2026-01-01T12:00:01.250000+00:00"
    assert datetime.fromisoformat(item["created_at"]) == at
    assert datetime.fromisoformat(item["created_at"]).utcoffset() == timedelta(0)


def test_event_without_optional_fields(client):
    """An event with no message, progress or metadata shows them as null, status success."""
    create_node(client)
    report(client, event="heartbeat")

    (item,) = node_events(client)["data"]

    assert (item["message"], item["progress"], item["metadata"]) == (None, None, None)
    assert item["status"] == "success"
    assert item["effect"] == "logged"


def test_sub_second_timestamps_are_kept(client, clock):
    """Two events a millisecond apart keep distinct, ordered times."""
    create_node(client)
    report(client, event="heartbeat", message="first")
    clock.advance(milliseconds=1)
    report(client, event="heartbeat", message="second")

    items = node_events(client)["data"]

    assert [item["message"] for item in items] == ["second", "first"]
    first, second = (datetime.fromisoformat(item["created_at"]) for item in reversed(items))
    assert second - first == timedelta(milliseconds=1)


# -- the stream across nodes --------------------------------------------------------------


def test_stream_is_oldest_first_across_nodes(client, clock):
    """From the start, events of every node come in the order they were written."""
    create_node(client)
    create_node(client, OTHER_MAC)
    sent = [(MAC, "boot_started"), (OTHER_MAC, "heartbeat"), (MAC, "heartbeat")]
    for mac, event in sent:
        clock.advance(seconds=1)
        report(client, mac, event=event)

    answer = stream(client)

    assert [item["event_type"] for item in answer["data"]] == [event for _, event in sent]
    ids = [item["id"] for item in answer["data"]]
    assert ids == sorted(ids)
    assert answer["next_cursor"] == ids[-1]


def test_stream_returns_only_events_after_the_cursor(client):
    """``since`` is the last id seen: that event and earlier ones are not sent again."""
    create_node(client)
    for number in range(5):
        report(client, event="heartbeat", message=str(number))
    ids = [item["id"] for item in stream(client)["data"]]

    answer = stream(client, f"?since={ids[1]}")

    assert [item["id"] for item in answer["data"]] == ids[2:]


def test_cursor_stays_put_when_nothing_is_new(client):
    """Polling with ``next_cursor`` and no new events returns nothing and the same cursor."""
    create_node(client)
    report(client, event="heartbeat")
    cursor = stream(client)["next_cursor"]

    for _ in range(3):
        answer = stream(client, f"?since={cursor}")
        assert answer["data"] == []
        assert answer["next_cursor"] == cursor


def test_empty_stream_from_the_start(client):
    """No events at all: empty page, cursor 0."""
    answer = stream(client)

    assert answer["data"] == []
    assert answer["next_cursor"] == 0


def test_follower_sees_every_event_exactly_once(client):
    """Paging with ``next_cursor`` while reports keep arriving misses and repeats nothing."""
    create_node(client)
    create_node(client, OTHER_MAC)
    seen: list[int] = []
    cursor = 0
    for round_number in range(6):
        for mac in (MAC, OTHER_MAC, MAC):
            report(client, mac, event="heartbeat", message=f"round {round_number}")
        answer = stream(client, f"?since={cursor}&limit=2")
        seen += [item["id"] for item in answer["data"]]
        cursor = answer["next_cursor"]
    while True:
        answer = stream(client, f"?since={cursor}&limit=2")
        if not answer["data"]:
            break
        seen += [item["id"] for item in answer["data"]]
        cursor = answer["next_cursor"]

    everything = [item["id"] for item in stream(client, "?limit=500")["data"]]
    assert len(everything) == 18
    assert seen == everything
    assert cursor == everything[-1]


def test_follower_does_not_miss_events_after_newest_ones_are_deleted(client):
    """Deleting a node with the newest events must not make later events hide behind the cursor."""
    create_node(client)
    doomed = create_node(client, OTHER_MAC)
    report(client, event="heartbeat", message="kept")
    for _ in range(3):
        report(client, OTHER_MAC, event="heartbeat", message="deleted with its node")
    cursor = stream(client)["next_cursor"]
    assert client.delete(f"/api/v1/nodes/{doomed['id']}").status_code == 200

    report(client, event="boot_started", message="after the delete")
    answer = stream(client, f"?since={cursor}")

    assert [item["message"] for item in answer["data"]] == ["after the delete"]


def test_stream_limit(client):
    """``limit`` caps a page; the cursor points at the last event returned."""
    create_node(client)
    for _ in range(5):
        report(client, event="heartbeat")

    answer = stream(client, "?limit=2")

    assert len(answer["data"]) == 2
    assert answer["next_cursor"] == answer["data"][-1]["id"]


def test_stream_filters_by_event_type(client):
    """``event_type`` keeps one kind across all nodes."""
    create_node(client, state="installing")
    create_node(client, OTHER_MAC, state="installing")
    report(client, event="install_progress", progress=10)
    report(client, OTHER_MAC, event="heartbeat")
    report(client, OTHER_MAC, event="install_progress", progress=30)

    answer = stream(client, "?event_type=install_progress")

    assert [item["progress"] for item in answer["data"]] == [10, 30]
    assert answer["next_cursor"] == answer["data"][-1]["id"]


@pytest.mark.parametrize("by", ["id", "mac", "dashed-mac"])
def test_stream_filters_by_node(client, by):
    """``node`` takes an id or a MAC in any form and keeps that node's events."""
    create_node(client)
    other = create_node(client, OTHER_MAC)
    report(client, event="heartbeat")
    report(client, OTHER_MAC, event="boot_started")
    report(client, event="heartbeat")
    report(client, OTHER_MAC, event="heartbeat")
    ref = {"id": other["id"], "mac": OTHER_MAC, "dashed-mac": "52-54-00-CC-00-02"}[by]

    answer = stream(client, f"?node={ref}")

    assert [(item["node_id"], item["event_type"]) for item in answer["data"]] == [
        (other["id"], "boot_started"),
        (other["id"], "heartbeat"),
    ]


def test_stream_combines_filters_and_cursor(client):
    """Node, type and cursor narrow the stream together."""
    create_node(client)
    create_node(client, OTHER_MAC)
    report(client, event="heartbeat", message="one")
    report(client, OTHER_MAC, event="heartbeat", message="other node")
    report(client, event="boot_started", message="other type")
    report(client, event="heartbeat", message="two")
    first = stream(client, f"?node={MAC}&event_type=heartbeat&limit=1")
    assert [item["message"] for item in first["data"]] == ["one"]

    rest = stream(client, f"?node={MAC}&event_type=heartbeat&since={first['next_cursor']}")

    assert [item["message"] for item in rest["data"]] == ["two"]


def test_stream_unknown_node_is_404(client):
    """Filtering by a node that does not exist is a JSON 404, not an empty page."""
    create_node(client)

    response = client.get("/api/v1/events?node=52:54:00:00:00:99")

    assert response.status_code == 404
    assert response.json["success"] is False


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?since=-1", "since"),
        ("?since=abc", "since"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?event_type=rebooted", "event_type"),
    ],
)
def test_stream_bad_query_is_422(client, query, field):
    """Bad cursors, limits and event types are refused, naming the parameter."""
    response = client.get(f"/api/v1/events{query}")

    assert response.status_code == 422
    assert field in response.json["errors"], response.json


def test_stream_includes_server_written_events(client):
    """The ``discovered`` event of a boot-registered machine is in the stream too."""
    assert client.get("/api/v1/boot?mac=52:54:00:cc:00:09").status_code == 200

    answer = stream(client, "?event_type=discovered")

    assert len(answer["data"]) == 1
    assert answer["data"][0]["ip_address"] == "127.0.0.1"

"""``GET /api/v1/nodes/stalled``: who is listed, why, since when, in which order."""

import itertools
from datetime import timedelta

import pytest

from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.store.transactions import write_transaction

TIMEOUT = 30
MAX_ATTEMPTS = 3
_macs = itertools.count(1)


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """A 30-minute timeout, three attempts, other rules off, plus what a test parametrizes."""
    app_config.update(
        INSTALL_TIMEOUT_MINUTES=TIMEOUT,
        INSTALL_SILENCE_MINUTES=0,
        FIRST_BOOT_TIMEOUT_MINUTES=0,
        MAX_INSTALL_ATTEMPTS=MAX_ATTEMPTS,
    )
    app_config.update(getattr(request, "param", {}))
    return app_config


def settings(**values):
    """Build this test's app with ``values`` on top of the module's settings."""
    return pytest.mark.parametrize("app_config", [values], indirect=True, ids=["settings"])


def new_mac() -> str:
    return f"52:54:00:20:00:{next(_macs):02x}"


def boot(client, mac: str) -> str:
    response = client.get("/api/v1/boot", query_string={"mac": mac})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def report(client, mac: str, event: str, **body) -> dict:
    response = client.post("/api/v1/report", json={"mac_address": mac, "event": event, **body})
    assert response.status_code == 200, response.json
    return response.json["data"]


def set_state(client, node_id: str, state: str) -> None:
    """An operator's state change."""
    response = client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": state})
    assert response.status_code == 200, response.json


def queued_node(client) -> tuple[str, str]:
    """A node with the test workflow that an operator sent to pending."""
    mac = new_mac()
    response = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": "test-os"})
    assert response.status_code == 201, response.json
    node_id = response.json["data"]["id"]
    set_state(client, node_id, "pending")
    return node_id, mac


def start_install(client, mac: str) -> None:
    """Boot a pending node: it gets the installer and enters installing."""
    assert "kernel " in boot(client, mac)


def installing_node(client) -> tuple[str, str]:
    node_id, mac = queued_node(client)
    start_install(client, mac)
    return node_id, mac


def feed(client, **query) -> dict:
    response = client.get("/api/v1/nodes/stalled", query_string=query)
    assert response.status_code == 200, response.json
    return response.json


def listed(client) -> dict[str, dict]:
    """The feed's items by node id."""
    return {item["id"]: item for item in feed(client)["data"]}


def sweep(app, clock) -> None:
    with app.app_context():
        sweep_stalled_installs(db.session, StallRules.from_config(app.config), clock())


def iso(moment) -> str:
    return moment.isoformat()


def test_envelope(client, clock):
    """An empty feed still has its whole envelope."""
    assert feed(client) == {
        "success": True,
        "data": [],
        "total": 0,
        "generated_at": iso(clock()),
        "timeout_minutes": float(TIMEOUT),
    }


def test_node_stalled_now_is_listed_from_its_deadline(client, clock):
    """An installing node past its deadline, not yet swept, is listed with every field."""
    node_id, mac = installing_node(client)
    started = clock()
    clock.advance(minutes=5)
    report(client, mac, "install_progress", progress=10)
    clock.advance(minutes=TIMEOUT - 5, seconds=-1)
    assert listed(client) == {}
    clock.advance(seconds=91)

    body = feed(client)

    assert body["total"] == 1
    [item] = body["data"]
    assert item["id"] == node_id
    assert (item["mac_address"], item["state"], item["workflow_id"]) == (
        mac,
        "installing",
        "test-os",
    )
    assert item["reason"] == "install_timeout"
    assert item["stalled_since"] == iso(started + timedelta(minutes=TIMEOUT))
    assert item["elapsed_seconds"] == 90.0
    assert (item["timeouts"], item["install_attempts"], item["max_install_attempts"]) == (
        0,
        0,
        MAX_ATTEMPTS,
    )
    assert item["last_event"] == {
        "type": "install_progress",
        "status": "success",
        "at": iso(started + timedelta(minutes=5)),
    }
    assert item["tags"] == []
    assert item["state_changed_at"] == iso(started)


@settings(INSTALL_SILENCE_MINUTES=10)
def test_silent_node_is_listed_as_install_silence(app, client, clock):
    """Silence is its own reason, from last heard + the limit, before and after a sweep."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=4)
    report(client, mac, "heartbeat")
    clock.advance(minutes=10)

    [item] = feed(client)["data"]
    assert (item["reason"], item["stalled_since"]) == ("install_silence", iso(clock()))

    sweep(app, clock)
    clock.advance(minutes=1)

    [item] = feed(client)["data"]
    assert (item["state"], item["reason"], item["timeouts"]) == ("pending", "install_silence", 1)
    assert item["stalled_since"] == iso(clock() - timedelta(minutes=1))
    assert item["elapsed_seconds"] == 60.0


def test_timed_out_episode_stays_listed_until_it_completes(app, client, clock):
    """Pending after a timeout, then installing again: listed, until install_complete."""
    node_id, mac = installing_node(client)
    deadline = clock.advance(minutes=TIMEOUT)
    sweep(app, clock)

    item = listed(client)[node_id]
    assert (item["state"], item["reason"], item["stalled_since"]) == (
        "pending",
        "install_timeout",
        iso(deadline),
    )
    assert (item["timeouts"], item["install_attempts"]) == (1, 1)
    assert (item["last_event"]["type"], item["last_event"]["status"]) == (
        "install_timeout",
        "failed",
    )

    clock.advance(minutes=2)
    start_install(client, mac)
    item = listed(client)[node_id]
    assert (item["state"], item["stalled_since"], item["timeouts"]) == (
        "installing",
        iso(deadline),
        1,
    )
    assert item["elapsed_seconds"] == 120.0

    report(client, mac, "install_complete")
    assert listed(client) == {}
    report(client, mac, "first_boot")
    assert listed(client) == {}


def test_node_stalled_again_is_listed_once_from_its_new_deadline(app, client, clock):
    """A retried install that stalls again shows once, with the newer deadline."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=TIMEOUT)
    sweep(app, clock)
    restarted = clock.advance(minutes=1)
    start_install(client, mac)
    clock.advance(minutes=TIMEOUT + 1)

    body = feed(client)

    assert body["total"] == 1
    [item] = body["data"]
    assert (item["id"], item["state"], item["timeouts"]) == (node_id, "installing", 1)
    assert item["stalled_since"] == iso(restarted + timedelta(minutes=TIMEOUT))


@settings(MAX_INSTALL_ATTEMPTS=1)
def test_install_failed_stays_listed_until_an_operator_starts_over(app, client, clock):
    """install_failed after a timeout is listed for as long as it lasts; pending starts over."""
    node_id, mac = installing_node(client)
    deadline = clock.advance(minutes=TIMEOUT)
    sweep(app, clock)
    clock.advance(days=3)

    item = listed(client)[node_id]
    assert (item["state"], item["stalled_since"], item["timeouts"]) == (
        "install_failed",
        iso(deadline),
        1,
    )
    assert item["max_install_attempts"] == 1

    set_state(client, node_id, "pending")
    assert listed(client) == {}
    start_install(client, mac)
    assert listed(client) == {}


def test_node_failed_by_its_own_report_is_not_listed(client, clock):
    """A failure the installer reported is not a stall: nothing timed out."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=1)
    report(client, mac, "install_failed", message="disk not found")

    assert listed(client) == {}


@settings(FIRST_BOOT_TIMEOUT_MINUTES=60)
def test_installed_node_without_first_boot_is_listed_not_failed(app, client, clock):
    """No first_boot within the limit: listed as no_first_boot, the node stays installed."""
    node_id, mac = installing_node(client)
    clock.advance(minutes=10)
    report(client, mac, "install_complete")
    installed_at = clock()
    clock.advance(minutes=60, seconds=-1)
    assert listed(client) == {}
    clock.advance(seconds=1)

    item = listed(client)[node_id]
    assert (item["state"], item["reason"]) == ("installed", "no_first_boot")
    assert item["stalled_since"] == iso(installed_at + timedelta(minutes=60))
    sweep(app, clock)
    assert listed(client)[node_id]["state"] == "installed"

    report(client, mac, "first_boot")
    assert listed(client) == {}


@settings(FIRST_BOOT_TIMEOUT_MINUTES=20)
def test_oldest_first_across_reasons(app, client, clock):
    """Items come oldest stall first, whatever their reason or the order nodes were made."""
    late, late_mac = queued_node(client)
    middle, middle_mac = queued_node(client)
    first, first_mac = queued_node(client)
    installed, installed_mac = queued_node(client)
    start_install(client, first_mac)  # T+0: deadline T+30, swept
    start_install(client, installed_mac)
    clock.advance(minutes=5)
    start_install(client, middle_mac)  # deadline T+35
    clock.advance(minutes=5)
    start_install(client, late_mac)  # deadline T+40
    clock.advance(minutes=2)
    report(client, installed_mac, "install_complete")  # no first boot by T+32
    clock.advance(minutes=18)
    sweep(app, clock)
    clock.advance(minutes=10)

    body = feed(client)

    assert [item["id"] for item in body["data"]] == [first, installed, middle, late]
    assert [item["reason"] for item in body["data"]] == [
        "install_timeout",
        "no_first_boot",
        "install_timeout",
        "install_timeout",
    ]
    assert body["total"] == 4


@settings(INSTALL_TIMEOUT_MINUTES=0)
def test_disabled_timeout_gives_an_empty_feed(app, client, clock):
    """With the timeout (and every other rule) off nothing is listed, not even past timeouts."""
    installing_node(client)
    with app.app_context(), write_transaction(db.session):
        db.session.add(
            Node(
                mac_address=new_mac(),
                state="pending",
                install_attempts=1,
                install_timeouts=1,
                created_at=clock(),
                updated_at=clock(),
                state_changed_at=clock(),
                episode_started_at=clock(),
            )
        )
    clock.advance(days=10)

    body = feed(client)

    assert (body["data"], body["total"], body["timeout_minutes"]) == ([], 0, 0.0)


def test_limit(client, clock):
    """``limit`` caps the items, oldest first; ``total`` still counts them all."""
    ids = []
    for _ in range(3):
        ids.append(installing_node(client)[0])
        clock.advance(minutes=1)
    clock.advance(minutes=TIMEOUT)

    body = feed(client, limit=2)

    assert [item["id"] for item in body["data"]] == ids[:2]
    assert body["total"] == 3
    assert client.get("/api/v1/nodes/stalled", query_string={"limit": 0}).status_code == 422


def test_limit_across_sources_counts_each_node_once(app, client, clock):
    """A page cut by ``limit`` still merges the timed-out episodes with the nodes stalled now,
    oldest first; a node stalled again after a timeout is listed, and counted, once."""
    retried, retried_mac = queued_node(client)
    again, again_mac = queued_node(client)
    start_install(client, retried_mac)
    start_install(client, again_mac)  # both: deadline T+30
    clock.advance(minutes=TIMEOUT + 1)
    sweep(app, clock)  # both back to pending after one timeout
    start_install(client, again_mac)  # T+31: installing again, deadline T+61
    clock.advance(minutes=5)
    fresh = []
    for _ in range(3):  # deadlines T+66, T+67, T+68
        fresh.append(installing_node(client)[0])
        clock.advance(minutes=1)
    clock.advance(minutes=TIMEOUT + 5)  # past every deadline, not swept

    body = feed(client, limit=3)

    assert [item["id"] for item in body["data"]] == [retried, again, fresh[0]]
    assert [item["reason"] for item in body["data"]] == ["install_timeout"] * 3
    assert body["total"] == 5
    assert feed(client)["total"] == 5
    assert [item["id"] for item in feed(client)["data"]] == [retried, again, *fresh]

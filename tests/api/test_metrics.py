"""GET /metrics after a scripted lifecycle: database gauges and per-process counters."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from provisioner.domain.events import EventType
from provisioner.domain.events import record_event
from provisioner.extensions import db
from provisioner.scheduler import run_sweep
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction

MAC = "52:54:00:4d:00:01"
FAILING = "52:54:00:4d:00:02"


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def report(client, mac: str, event: str, **extra) -> None:
    response = client.post("/api/v1/report", json={"mac_address": mac, "event": event, **extra})
    assert response.status_code == 200, response.json


def install(client, mac: str) -> None:
    """Register ``mac`` by booting, give it the workflow and boot it into installing."""
    client.get(f"/api/v1/boot?mac={mac}")
    client.patch(f"/api/v1/nodes/{mac}", json={"workflow_id": "test-os"})
    client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})
    assert "kernel " in client.get(f"/api/v1/boot?mac={mac}").get_data(as_text=True)


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """Two attempts, a 30-minute timeout, plus what a test parametrizes."""
    app_config.update(MAX_INSTALL_ATTEMPTS=2, INSTALL_TIMEOUT_MINUTES=30)
    app_config.update(getattr(request, "param", {}))
    return app_config


def test_a_lifecycle_shows_in_the_counters_and_gauges(client, clock):
    """Events, install outcomes, durations and node states are all counted."""
    before = scrape(client)
    install(client, MAC)
    clock.advance(minutes=12)
    report(client, MAC, "install_progress", progress=50)
    report(client, MAC, "install_complete")
    report(client, MAC, "first_boot")
    install(client, FAILING)
    report(client, FAILING, "install_failed", message="disk not found")
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(after, "provisioner_nodes", state="active") == 1
    assert value(after, "provisioner_nodes", state="pending") == 1
    assert value(after, "provisioner_nodes", state="installing") == 0
    assert delta("provisioner_events_total", event_type="discovered", status="success") == 2
    assert delta("provisioner_events_total", event_type="install_progress", status="success") == 1
    assert delta("provisioner_events_total", event_type="install_failed", status="failed") == 1
    assert delta("provisioner_install_attempts_total", outcome="success") == 1
    assert delta("provisioner_install_attempts_total", outcome="retry") == 1
    assert delta("provisioner_install_duration_seconds_count") == 1
    assert delta("provisioner_install_duration_seconds_sum") == pytest.approx(12 * 60)
    assert delta("provisioner_request_duration_seconds_count", endpoint="events.report") == 4


def test_stalled_gauge_and_sweep_timestamp(app, client, clock):
    """A stalled install is counted at scrape time and the sweep records its success."""
    install(client, MAC)
    clock.advance(minutes=31)
    assert value(scrape(client), "provisioner_stalled_installs", reason="install_timeout") == 1
    run_sweep(app)
    samples = scrape(client)
    assert value(samples, "provisioner_stalled_installs", reason="install_timeout") == 1
    assert value(samples, "provisioner_nodes", state="pending") == 1
    assert value(samples, "provisioner_sweep_last_success_timestamp_seconds") > 0


def test_rolled_back_work_is_not_counted(app, client, clock):
    """An event recorded in a transaction that then fails is not counted."""
    client.get(f"/api/v1/boot?mac={MAC}")
    before = scrape(client)
    with app.app_context():
        node = find_node(db.session, MAC)
        with pytest.raises(RuntimeError), write_transaction(db.session):
            record_event(db.session, node, EventType.HEARTBEAT, now=clock())
            db.session.flush()
            raise RuntimeError("the request failed after recording")
    after = scrape(client)
    heartbeat = {"event_type": "heartbeat", "status": "success"}
    assert value(after, "provisioner_events_total", **heartbeat) == value(
        before, "provisioner_events_total", **heartbeat
    )


@pytest.mark.parametrize("app_config", [{"REPORT_AUTH": "token"}], indirect=True)
def test_rejected_reports_are_counted(client):
    """A report without its token is refused and counted by reason."""
    client.get(f"/api/v1/boot?mac={MAC}")
    before = scrape(client)
    response = client.post("/api/v1/report", json={"mac_address": MAC, "event": "heartbeat"})
    assert response.status_code == 401
    after = scrape(client)
    rejected = "provisioner_report_rejected_total"
    assert value(after, rejected, reason="token") - value(before, rejected, reason="token") == 1


@pytest.mark.parametrize(
    "app_config", [{"API_TOKENS": ["a" * 32], "READ_TOKENS": ["r" * 32]}], indirect=True
)
def test_metrics_need_a_token_once_tokens_are_configured(client):
    """With tokens configured, /metrics takes a read token and refuses none."""
    assert client.get("/metrics").status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": "Bearer " + "r" * 32}).status_code == 200
    )


@pytest.mark.parametrize("app_config", [{"FIRST_BOOT_TIMEOUT_MINUTES": 10}], indirect=True)
def test_no_first_boot_is_counted_when_enabled(client, clock):
    """An installed node that never reports first_boot is a no_first_boot stall."""
    install(client, MAC)
    report(client, MAC, "install_complete")
    assert value(scrape(client), "provisioner_stalled_installs", reason="no_first_boot") == 0
    clock.advance(minutes=11)
    assert value(scrape(client), "provisioner_stalled_installs", reason="no_first_boot") == 1

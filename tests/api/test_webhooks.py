"""Webhooks: the outbox written with the change, payloads and formats, and delivery."""

import base64
import hashlib
import hmac
import itertools
import json
import logging
import threading
from contextlib import suppress
from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy import delete
from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy import text
from webhookreceiver import WebhookReceiver

from provisioner import create_app
from provisioner import scheduler
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import transition
from provisioner.domain.sweeper import StallRules
from provisioner.domain.sweeper import sweep_stalled_installs
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import WebhookDelivery
from provisioner.outbox import webhook_delivery
from provisioner.outbox import webhooks
from provisioner.outbox.webhook_delivery import DeliverySettings
from provisioner.outbox.webhook_delivery import claim_due
from provisioner.outbox.webhook_delivery import deliver_due
from provisioner.outbox.webhook_delivery import retry_delay
from provisioner.outbox.webhooks import SENDER_KEY
from provisioner.outbox.webhooks import DeliveryFailed
from provisioner.outbox.webhooks import post
from provisioner.outbox.webhooks import render
from provisioner.store.transactions import write_transaction

SECRET = "webhook-test-secret"
URL = "http://hooks.test/provisioner"
ALL_EVENTS = ["state_changed", "install_failed", "install_timeout", "stalled"]
TIMEOUT_MINUTES = 30
_macs = itertools.count(1)


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """One JSON receiver for every event, plus whatever a test parametrizes."""
    app_config.update(
        WEBHOOKS=[{"url": URL, "events": ALL_EVENTS, "secret": SECRET}],
        INSTALL_TIMEOUT_MINUTES=TIMEOUT_MINUTES,
        MAX_INSTALL_ATTEMPTS=3,
    )
    app_config.update(getattr(request, "param", {}))
    return app_config


@pytest.fixture
def app(app):
    """The app, with an empty outbox (the PostgreSQL scratch database is shared)."""
    with app.app_context(), write_transaction(db.session) as session:
        session.execute(delete(WebhookDelivery))
    return app


def settings(**values):
    """Build this test's app with ``values`` on top of the module's settings."""
    return pytest.mark.parametrize("app_config", [values], indirect=True, ids=["settings"])


class FakeSender:
    """Records what would be POSTed; fails the first ``failures`` calls.

    With ``meet=n``, the first call in each thread waits until ``n`` threads are sending at
    once, so concurrent deliverers really do hold their batches at the same time.
    """

    def __init__(self, failures: int = 0, meet: int = 0) -> None:
        self.failures = failures
        self.meeting = threading.Barrier(meet, timeout=30) if meet else None
        self.met = threading.local()
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        if self.meeting and not getattr(self.met, "done", False):
            self.met.done = True
            self.meeting.wait()
        with self.lock:
            self.calls.append((url, body, headers))
            if len(self.calls) <= self.failures:
                raise DeliveryFailed("HTTP 500")
        return 204

    def delivery_ids(self) -> list[str]:
        return [headers["X-Provisioner-Delivery"] for _, _, headers in self.calls]


def add_node(app, state: str, now, **fields) -> str:
    """Store a node in ``state`` directly; return its id."""
    number = next(_macs)
    with app.app_context(), write_transaction(db.session) as session:
        node = Node(
            mac_address=f"52:54:00:77:{number // 256:02x}:{number % 256:02x}",
            hostname=f"node{number}",
            state=state,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
            **({"install_attempts": 0} | fields),
        )
        session.add(node)
        session.flush()
        return node.id


def move(app, node_id: str, target: str, now, **kwargs) -> None:
    """One transition in its own write transaction (an operator's, unless told)."""
    kwargs.setdefault("triggered_by", Trigger.ADMIN)
    with app.app_context(), write_transaction(db.session) as session:
        transition(session, session.get(Node, node_id), target, now=now, **kwargs)


def outbox(app) -> list[WebhookDelivery]:
    """The outbox rows, oldest first."""
    with app.app_context():
        rows = list(db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        db.session.expunge_all()
        return rows


def deliver(app, clock, send) -> webhook_delivery.DeliveryRun:
    with app.app_context():
        return deliver_due(db.session, DeliverySettings.from_config(app.config), clock, send)


# -- the outbox is written with the change ------------------------------------------------


def test_transition_writes_its_delivery_in_the_same_commit(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())

    move(app, node_id, State.PENDING, clock.advance(minutes=1), comment="queued")

    [row] = outbox(app)
    assert (row.event, row.url, row.format, row.attempts) == ("state_changed", URL, "json", 0)
    assert row.created_at == row.next_attempt_at == clock()
    assert row.delivered_at is None
    assert row.payload["from_state"] == "discovered"
    assert row.payload["to_state"] == "pending"
    assert row.payload["message"] == "queued"


def test_rolled_back_transition_leaves_no_delivery(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())

    with pytest.raises(RuntimeError), app.app_context():
        with write_transaction(db.session) as session:
            transition(
                session,
                session.get(Node, node_id),
                State.PENDING,
                triggered_by=Trigger.ADMIN,
                now=clock(),
            )
            raise RuntimeError("the request failed after the move")

    assert outbox(app) == []
    move(app, node_id, State.PENDING, clock())  # a later commit does not resurrect it
    assert [row.payload["to_state"] for row in outbox(app)] == ["pending"]


def test_failing_outbox_write_rolls_back_the_change(app, clock):
    """The outbox row and the state change are one transaction: neither commits alone."""
    node_id = add_node(app, State.DISCOVERED, clock())

    def refuse(*args):
        raise RuntimeError("outbox insert failed")

    event.listen(WebhookDelivery, "before_insert", refuse)
    try:
        with pytest.raises(RuntimeError, match="outbox insert failed"):
            move(app, node_id, State.PENDING, clock())
    finally:
        event.remove(WebhookDelivery, "before_insert", refuse)

    with app.app_context():
        assert db.session.get(Node, node_id).state == State.DISCOVERED
        assert db.session.scalars(select(NodeStateLog)).all() == []
    assert outbox(app) == []


def test_move_undone_by_a_savepoint_rollback_is_not_announced(app, clock):
    kept, undone = (add_node(app, State.DISCOVERED, clock()) for _ in range(2))

    with app.app_context(), write_transaction(db.session) as session:
        for node_id in (kept, undone):
            with suppress(RuntimeError), session.begin_nested():
                node = session.get(Node, node_id)
                transition(session, node, State.PENDING, triggered_by=Trigger.ADMIN, now=clock())
                if node_id == undone:
                    raise RuntimeError("roll this one back")

    assert [row.payload["node"]["id"] for row in outbox(app)] == [kept]


@settings(WEBHOOKS=[])
def test_no_receivers_no_outbox_rows(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    assert outbox(app) == []


@settings(
    WEBHOOKS=[
        {"url": "http://a.test/", "events": ["install_failed"]},
        {"url": "http://b.test/", "events": ["state_changed", "install_failed"], "format": "ntfy"},
    ]
)
def test_each_receiver_gets_the_events_it_asked_for(app, clock):
    node_id = add_node(app, State.INSTALLING, clock(), install_attempts=2)
    move(app, node_id, State.INSTALL_FAILED, clock(), triggered_by=Trigger.NODE_REPORT)

    rows = {(row.url, row.event, row.format) for row in outbox(app)}
    assert rows == {
        ("http://a.test/", "install_failed", "json"),
        ("http://b.test/", "state_changed", "ntfy"),
        ("http://b.test/", "install_failed", "ntfy"),
    }


def test_api_state_change_and_report_write_deliveries(app, client, clock):
    response = client.post("/api/v1/nodes", json={"mac_address": "52:54:00:77:99:01"})
    node_id = response.json["data"]["id"]
    client.patch(f"/api/v1/nodes/{node_id}/state", json={"state": "installing", "force": True})
    clock.advance(minutes=5)
    response = client.post(
        "/api/v1/report",
        json={"mac_address": "52:54:00:77:99:01", "event": "install_complete"},
    )
    assert response.status_code == 200, response.json

    moves = [(row.payload["from_state"], row.payload["to_state"]) for row in outbox(app)]
    assert moves == [("discovered", "installing"), ("installing", "installed")]


def test_timeouts_announce_install_timeout_stalled_once_and_install_failed(app, clock):
    """First timeout of an episode: also ``stalled``; the last one: ``install_failed``."""
    node_id = add_node(app, State.PENDING, clock())
    rules = StallRules(timeout_minutes=TIMEOUT_MINUTES, max_attempts=3)
    for _ in range(3):
        move(app, node_id, State.INSTALLING, clock.advance(minutes=1), triggered_by=Trigger.BOOT)
        with app.app_context():
            sweep_stalled_installs(db.session, rules, clock.advance(minutes=TIMEOUT_MINUTES))

    events = [row.event for row in outbox(app) if row.payload["from_state"] != "pending"]
    assert events == [
        *["state_changed", "install_timeout", "stalled"],
        *["state_changed", "install_timeout"],
        *["state_changed", "install_failed", "install_timeout"],
    ]
    timeout = next(row for row in outbox(app) if row.event == "install_timeout")
    assert (timeout.payload["from_state"], timeout.payload["to_state"]) == (
        "installing",
        "pending",
    )
    assert timeout.payload["message"] == f"Installation timed out after {TIMEOUT_MINUTES} minutes"


# -- what receivers get ---------------------------------------------------------------------


def test_json_payload_shape(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock(), workflow_id="test-os")
    move(app, node_id, State.PENDING, clock(), comment="go")
    [row] = outbox(app)

    outgoing = render(row.uuid, "json", row.payload, "")
    body = json.loads(outgoing.body)

    assert set(body) == {"delivery", "event", "node", "from_state", "to_state", "message", "at"}
    assert body["delivery"] == row.uuid == outgoing.headers["X-Provisioner-Delivery"]
    assert body["event"] == "state_changed" == outgoing.headers["X-Provisioner-Event"]
    assert body["node"]["id"] == node_id
    assert body["node"]["state"] == "pending"
    assert body["node"]["workflow_id"] == "test-os"
    assert {"mac_address", "hostname", "install_attempts"} <= set(body["node"])
    assert body["at"] == clock().isoformat()
    assert outgoing.headers["Content-Type"] == "application/json"
    assert "X-Provisioner-Signature" not in outgoing.headers


def sample(event_name: str = "install_failed") -> dict:
    return {
        "event": event_name,
        "node": {"id": "n1", "mac_address": "52:54:00:00:00:01", "hostname": "web01"},
        "from_state": "installing",
        "to_state": "install_failed",
        "message": "disk not found @everyone",
        "at": "2026-01-01T12:00:00+00:00",
    }


@pytest.mark.parametrize("fmt", ["json", "ntfy", "discord"])
def test_signature_is_the_hmac_of_the_exact_body(fmt):
    outgoing = render("d1", fmt, sample(), SECRET)

    expected = hmac.new(SECRET.encode(), outgoing.body, hashlib.sha256).hexdigest()
    assert outgoing.headers["X-Provisioner-Signature"] == f"sha256={expected}"


def test_ntfy_posts_a_plain_text_message_with_a_title():
    outgoing = render("d1", "ntfy", sample(), "")

    assert outgoing.headers["Content-Type"].startswith("text/plain")
    assert outgoing.headers["Title"] == "web01: install failed"
    assert outgoing.headers["Priority"] == "high"
    text_body = outgoing.body.decode()
    assert "disk not found" in text_body
    assert "installing -> install_failed" in text_body
    assert "52:54:00:00:00:01" in text_body


def test_discord_posts_content_and_pings_nobody():
    body = json.loads(render("d1", "discord", sample(), "").body)

    assert body["content"].startswith("**web01: install failed**\n")
    assert "disk not found" in body["content"]
    assert body["allowed_mentions"] == {"parse": []}


def test_state_change_title_names_the_move():
    payload = sample("state_changed") | {"from_state": "pending", "to_state": "installing"}
    assert render("d1", "ntfy", payload, "").headers["Title"] == "web01: pending -> installing"


# -- delivery ------------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_up_to_an_hour():
    delays = [retry_delay(attempts, 10).total_seconds() for attempts in range(1, 12)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert retry_delay(500, 10) == timedelta(hours=1)


def test_delivered_once_and_marked(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    send = FakeSender()

    run = deliver(app, clock, send)
    clock.advance(hours=2)
    again = deliver(app, clock, send)

    [row] = outbox(app)
    assert (run.sent, again.sent) == (1, 0)
    assert send.delivery_ids() == [row.uuid]
    assert (row.attempts, row.delivered_at, row.last_error) == (
        1,
        clock() - timedelta(hours=2),
        None,
    )
    url, body, headers = send.calls[0]
    assert url == URL
    assert (
        headers["X-Provisioner-Signature"]
        == "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    )


def test_failures_follow_the_backoff_schedule(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    send = FakeSender(failures=3)
    base = app.config["WEBHOOK_RETRY_SECONDS"]

    for attempt in range(1, 4):
        assert deliver(app, clock, send).failed == 1
        [row] = outbox(app)
        delay = retry_delay(attempt, base)
        assert (row.attempts, row.last_error) == (attempt, "HTTP 500")
        assert row.next_attempt_at == clock() + delay
        clock.advance(seconds=delay.total_seconds() - 1)
        assert deliver(app, clock, send).failed == 0  # not due yet: nothing sent
        clock.advance(seconds=1)

    assert deliver(app, clock, send).sent == 1
    [row] = outbox(app)
    assert (row.attempts, row.delivered_at) == (4, clock())
    assert len(set(send.delivery_ids())) == 1 and len(send.calls) == 4


def test_day_old_deliveries_are_dropped_with_a_warning(app, clock, caplog):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    move(app, node_id, State.RETIRED, clock.advance(hours=23))
    [pending_row, retired_row] = outbox(app)
    deliver(app, clock, FakeSender(failures=100))

    clock.advance(hours=1, seconds=1)
    with caplog.at_level(logging.WARNING, logger="provisioner.outbox.webhooks"):
        run = deliver(app, clock, FakeSender())

    assert run.dropped == 1
    assert [row.uuid for row in outbox(app)] == [retired_row.uuid]
    [warning] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert pending_row.uuid in warning.getMessage()
    assert "undelivered after a day" in warning.getMessage()
    assert "HTTP 500" in warning.getMessage()
    assert "/provisioner" not in warning.getMessage()  # the URL path may hold a secret


def test_delivered_rows_are_pruned_silently_after_a_day(app, clock, caplog):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    deliver(app, clock, FakeSender())

    clock.advance(days=1, seconds=1)
    with caplog.at_level(logging.WARNING, logger="provisioner.outbox.webhooks"):
        run = deliver(app, clock, FakeSender())

    assert (run.dropped, outbox(app), caplog.records) == (0, [], [])


def test_delivery_for_a_receiver_no_longer_configured_is_dropped(app, clock, caplog):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    app.config["WEBHOOKS"] = [{"url": "http://other.test/", "events": ALL_EVENTS}]
    send = FakeSender()

    with caplog.at_level(logging.WARNING, logger="provisioner.outbox.webhooks"):
        run = deliver(app, clock, send)

    assert (run.dropped, send.calls, outbox(app)) == (1, [], [])
    assert "no receiver http://hooks.test (json) is configured" in caplog.text


def test_claimed_delivery_is_hidden_until_its_claim_expires(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    with app.app_context():
        [first] = claim_due(db.session, clock())
        assert claim_due(db.session, clock()) == []  # a second deliverer finds nothing
        later = clock() + webhook_delivery.CLAIM_LEASE
        [again] = claim_due(db.session, later)  # the first one died: retried after the lease
    assert first.uuid == again.uuid


def test_many_deliveries_go_out_in_batches(app, clock):
    node_ids = [add_node(app, State.DISCOVERED, clock()) for _ in range(25)]
    for node_id in node_ids:
        move(app, node_id, State.PENDING, clock())
    send = FakeSender()

    assert deliver(app, clock, send).sent == 25
    assert sorted(send.delivery_ids()) == sorted(row.uuid for row in outbox(app))


def test_two_concurrent_deliverers_never_send_one_delivery_twice(app, clock):
    node_ids = [add_node(app, State.DISCOVERED, clock()) for _ in range(40)]
    for node_id in node_ids:
        move(app, node_id, State.PENDING, clock())
    send = FakeSender(meet=2)
    start = threading.Barrier(2)
    errors = []

    def deliverer() -> None:
        try:
            start.wait()
            deliver(app, clock, send)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=deliverer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    ids = send.delivery_ids()
    assert len(ids) == len(set(ids)) == 40
    assert all(row.delivered_at is not None and row.attempts == 1 for row in outbox(app))


@pytest.mark.parametrize("backend", ["postgresql"])
def test_claim_skips_rows_another_deliverer_has_locked(app, clock):
    """FOR UPDATE SKIP LOCKED: a row locked elsewhere is passed over, without waiting."""
    node_ids = [add_node(app, State.DISCOVERED, clock()) for _ in range(2)]
    for node_id in node_ids:
        move(app, node_id, State.PENDING, clock())
    locked, free = outbox(app)
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with other.connect() as connection:
            connection.execute(
                text("SELECT id FROM webhook_deliveries WHERE id = :id FOR UPDATE"),
                {"id": locked.id},
            )
            claimed = []

            def claim() -> None:
                with app.app_context():
                    claimed.extend(claim_due(db.session, clock()))

            claimer = threading.Thread(target=claim)
            claimer.start()
            claimer.join(30)  # a claim waiting on the lock would wait until the rollback
            finished_while_locked = not claimer.is_alive()
            connection.rollback()
            claimer.join(30)
            assert finished_while_locked
            assert [delivery.id for delivery in claimed] == [free.id]
    finally:
        other.dispose()


# -- the HTTP sender -----------------------------------------------------------------------


def test_post_returns_the_status_of_an_accepting_receiver():
    with WebhookReceiver(default=202) as receiver:
        status = post(receiver.url, b'{"a":1}', {"Content-Type": "application/json"}, 5)
    assert status == 202
    [hit] = receiver.received
    assert (hit.body, hit.headers["Content-Type"]) == (b'{"a":1}', "application/json")


@pytest.mark.parametrize("status", [500, 404, 302])
def test_post_fails_on_a_non_2xx_answer(status):
    with WebhookReceiver(default=status) as receiver:
        with pytest.raises(DeliveryFailed, match=f"HTTP {status}"):
            post(receiver.url, b"{}", {}, 5)


def test_post_fails_when_nothing_listens():
    with WebhookReceiver() as receiver:
        url = receiver.url
    with pytest.raises(DeliveryFailed, match="cannot connect"):
        post(url, b"{}", {}, 5)


def test_post_gives_up_on_a_slow_receiver():
    """The receiver answers only when released: without a timeout ``post`` would wait."""
    with WebhookReceiver(hold=True) as receiver:
        with pytest.raises(DeliveryFailed, match="no answer within 0.2 s"):
            post(receiver.url, b"{}", {}, 0.2)
        assert receiver.received == []  # given up on while the receiver still held it


# -- the job and the command ----------------------------------------------------------------


def test_delivery_job_is_scheduled_only_with_receivers(app, app_config):
    jobs = {job.id: job for job in app.extensions[scheduler.EXTENSION_KEY].get_jobs()}
    job = jobs["deliver_webhooks"]
    assert job.trigger.interval == timedelta(seconds=app.config["WEBHOOK_INTERVAL_SECONDS"])

    bare = create_app(app_config | {"WEBHOOKS": []})
    bare_jobs = bare.extensions[scheduler.EXTENSION_KEY].get_jobs()
    assert "deliver_webhooks" not in {job.id for job in bare_jobs}


def test_scheduled_job_sends_with_the_app_sender(app, clock):
    node_id = add_node(app, State.DISCOVERED, clock())
    move(app, node_id, State.PENDING, clock())
    send = FakeSender()
    app.extensions[SENDER_KEY] = send

    scheduler.run_webhook_delivery(app)

    assert len(send.calls) == 1
    assert outbox(app)[0].delivered_at == clock()


def test_webhooks_test_command_reports_each_receiver(app, runner):
    with WebhookReceiver(statuses=[200]) as good, WebhookReceiver(default=500) as bad:
        app.config["WEBHOOKS"] = [
            {"url": good.url, "events": ALL_EVENTS, "secret": SECRET, "format": "json"},
            {"url": bad.url, "events": ALL_EVENTS, "secret": "", "format": "ntfy"},
        ]
        result = runner.invoke(args=["webhooks", "test"])

    assert result.exit_code == 1, result.output
    first, second = result.output.splitlines()[:2]
    assert first.startswith("1. http://127.0.0.1:") and first.endswith("(json): ok, HTTP 200")
    assert second.endswith("(ntfy): FAILED: HTTP 500: no")
    assert "1 of 2 receivers failed" in result.output
    [hit] = good.received
    body = json.loads(hit.body)
    assert body["event"] == "test" and body["node"]["hostname"] == "webhook-test"
    expected = hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Provisioner-Signature"] == f"sha256={expected}"
    assert outbox(app) == []  # sent right away, not through the outbox


@settings(WEBHOOKS=[])
def test_webhooks_test_command_without_receivers(runner):
    result = runner.invoke(args=["webhooks", "test"])
    assert result.exit_code == 1
    assert "no webhook receivers configured" in result.output


def test_a_stuck_outbox_row_never_blocks_a_report(app, client, clock):
    """Delivery is asynchronous: writing the outbox is all a request does."""
    node_id = add_node(app, State.INSTALLING, clock())
    app.extensions[SENDER_KEY] = lambda *args: pytest.fail("a request sent a webhook")
    with app.app_context():
        mac = db.session.get(Node, node_id).mac_address

    response = client.post(
        "/api/v1/report", json={"mac_address": mac, "event": "install_complete"}
    )

    assert response.status_code == 200
    assert [row.event for row in outbox(app)] == ["state_changed"]


# -- credentials in the URL ----------------------------------------------------------------

HOOK_USER = "hook-user"
HOOK_PASSWORD = "pa:ss@w0rd/€"
#: The password as it is written in a URL: percent-encoded.
QUOTED_PASSWORD = "pa%3Ass%40w0rd%2F%E2%82%AC"
BASIC = "Basic " + base64.b64encode(f"{HOOK_USER}:{HOOK_PASSWORD}".encode()).decode()


def with_credentials(url: str) -> str:
    """``url`` with ``hook-user:<password>@`` in front of its host."""
    return url.replace("http://", f"http://{HOOK_USER}:{QUOTED_PASSWORD}@", 1)


def assert_no_password(text: str) -> None:
    for secret in (HOOK_PASSWORD, QUOTED_PASSWORD, "w0rd"):
        assert secret not in text


def test_credentials_in_the_url_are_sent_as_basic_auth():
    with WebhookReceiver(authorization=BASIC) as receiver:
        status = post(with_credentials(receiver.url), b"{}", {}, 5)
    assert status == 200
    [hit] = receiver.received
    assert (hit.path, hit.headers["Authorization"]) == ("/hook", BASIC)


def test_wrong_credentials_fail_without_showing_the_password():
    with WebhookReceiver(authorization="Basic bm9ib2R5Om5vdGhpbmc=") as receiver:
        with pytest.raises(DeliveryFailed, match="HTTP 401") as failed:
            post(with_credentials(receiver.url), b"{}", {}, 5)
    assert_no_password(str(failed.value))


def test_unreachable_receiver_error_does_not_show_the_password():
    with WebhookReceiver() as receiver:
        url = with_credentials(receiver.url)
    with pytest.raises(DeliveryFailed, match="cannot connect") as failed:
        post(url, b"{}", {}, 5)
    assert_no_password(str(failed.value))


def test_an_error_echoing_the_password_is_scrubbed():
    def echo(*args):
        raise DeliveryFailed(
            f"HTTP 400: bad user {HOOK_USER}:{QUOTED_PASSWORD} or {HOOK_PASSWORD}"
        )

    with WebhookReceiver() as receiver:
        webhooks._post, real = echo, webhooks._post
        try:
            with pytest.raises(DeliveryFailed) as failed:
                post(with_credentials(receiver.url), b"{}", {}, 5)
        finally:
            webhooks._post = real
    assert_no_password(str(failed.value))


def test_delivery_logs_and_stored_errors_never_hold_the_password(app, clock, caplog):
    with WebhookReceiver(statuses=[500], authorization=BASIC) as receiver:
        url = with_credentials(receiver.url)
        app.config["WEBHOOKS"] = [
            {"url": url, "events": ALL_EVENTS, "secret": "", "format": "json"}
        ]
        node_id = add_node(app, State.DISCOVERED, clock())
        move(app, node_id, State.PENDING, clock())
        with caplog.at_level(logging.DEBUG):
            first = deliver(app, clock, post)
            failed = outbox(app)[0].last_error
            clock.advance(hours=1)
            second = deliver(app, clock, post)

    assert (first.failed, second.sent) == (1, 1)
    assert [hit.headers["Authorization"] for hit in receiver.received] == [BASIC, BASIC]
    assert f"to http://***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]} failed" in caplog.text
    assert failed == "HTTP 500: no"
    assert_no_password(caplog.text)


def test_webhooks_test_command_redacts_credentials(app, runner):
    with WebhookReceiver(authorization=BASIC) as good, WebhookReceiver(default=500) as bad:
        app.config["WEBHOOKS"] = [
            {
                "url": with_credentials(good.url),
                "events": ALL_EVENTS,
                "secret": "",
                "format": "json",
            },
            {
                "url": with_credentials(bad.url),
                "events": ALL_EVENTS,
                "secret": "",
                "format": "json",
            },
        ]
        result = runner.invoke(args=["webhooks", "test"])

    first, second = result.output.splitlines()[:2]
    assert first.startswith("1. http://***@127.0.0.1:") and first.endswith("ok, HTTP 200")
    assert second.startswith("2. http://***@127.0.0.1:") and "FAILED: HTTP 500" in second
    assert [hit.headers["Authorization"] for hit in good.received] == [BASIC]
    assert_no_password(result.output)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@hooks.test:8443/path/secret", "https://***@hooks.test:8443"),
        ("https://token@hooks.test/x", "https://***@hooks.test"),
        ("http://[::1]:8080/hook", "http://[::1]:8080"),
        ("http://a:b@c@hooks.test/", "http://***@hooks.test"),
    ],
)
def test_receiver_name_shows_no_credentials_and_no_path(url, shown):
    assert webhook_delivery.receiver_name(url) == shown

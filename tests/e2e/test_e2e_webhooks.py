"""End to end: the real server delivers a webhook through failures and a restart.

A loopback receiver answers the first two deliveries with HTTP 500 and then accepts. The
server writes the notification to its outbox with the state change and its scheduler sends
it; between the second failure and the retry the server is stopped and started again. The
receiver must end up with exactly one accepted delivery, every attempt signed correctly and
carrying the same delivery id.
"""

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from serverproc import ServerProcess
from serverproc import sqlite_settings
from webhookreceiver import WebhookReceiver

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"
MAC = "52:54:00:e2:0b:01"
INTERVAL_SECONDS = 0.2
#: Retries wait 2 s, then 4 s: time enough to stop the server between the 2nd and 3rd try.
RETRY_SECONDS = 2
#: Generous: only turns a hang into a failure.
DEADLINE_SECONDS = 30


def server_env(tmp_path: Path, database_url: str, receiver_url: str) -> dict[str, str]:
    """Settings for a server on ``database_url`` with one signed JSON receiver."""
    hooks = [{"url": receiver_url, "events": ["state_changed"], "secret": SECRET}]
    env = sqlite_settings(
        tmp_path,
        DATABASE_URL=database_url,
        WEBHOOKS=json.dumps(hooks),
        WEBHOOK_INTERVAL_SECONDS=INTERVAL_SECONDS,
        WEBHOOK_RETRY_SECONDS=RETRY_SECONDS,
    )
    # Loopback deliveries must not go through a proxy the environment may name.
    return env | {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def clear_outbox(database_url: str) -> None:
    """Drop deliveries other tests left in a shared PostgreSQL scratch database."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        if sa.inspect(connection).has_table("webhook_deliveries"):
            connection.execute(sa.text("DELETE FROM webhook_deliveries"))
    engine.dispose()


def delivery_rows(database_url: str) -> list[tuple]:
    """(attempts, delivered) of every outbox row, oldest first."""
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT attempts, delivered_at FROM webhook_deliveries ORDER BY id")
        ).all()
    engine.dispose()
    return [(attempts, delivered_at is not None) for attempts, delivered_at in rows]


def wait_until_delivered(database_url: str) -> list[tuple]:
    """Poll until every outbox row is marked delivered (then none is ever sent again)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (rows := delivery_rows(database_url)) and not all(done for _, done in rows):
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    return rows


def signature_ok(headers: dict[str, str], body: bytes) -> bool:
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-Provisioner-Signature", ""), f"sha256={expected}")


def test_delivery_survives_failures_and_a_restart(tmp_path, database_url):
    clear_outbox(database_url)
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        env = server_env(tmp_path, database_url, receiver.url)
        with ServerProcess(env, tmp_path, name="first") as server:
            created = server.post_json("/api/v1/nodes", {"mac_address": MAC})
            assert created.status == 201, created
            node_id = created.body["data"]["id"]
            moved = server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "pending"})
            assert moved.status == 200, moved
            receiver.wait_for(2, timeout=RETRY_SECONDS + 5)
        assert [hit.status for hit in receiver.received] == [500, 500], server.log_tail()
        assert "HTTP 500" in server.log_text()

        with ServerProcess(env, tmp_path, name="second") as restarted:
            receiver.wait_for(3, timeout=2 * RETRY_SECONDS + DEADLINE_SECONDS)
            # Marked delivered: claim_due never picks the row again, so no 4th POST comes.
            rows = wait_until_delivered(database_url)
            log = restarted.log_tail()
        hits = receiver.received

    assert rows == [(3, True)], log
    assert [hit.status for hit in hits] == [500, 500, 200], log
    assert len({hit.headers["X-Provisioner-Delivery"] for hit in hits}) == 1
    assert all(signature_ok(hit.headers, hit.body) for hit in hits)
    delivered = json.loads(hits[-1].body)
    assert delivered["event"] == "state_changed"
    assert (delivered["from_state"], delivered["to_state"]) == ("discovered", "pending")
    assert delivered["node"]["id"] == node_id
    assert delivered["node"]["mac_address"] == MAC


def test_a_hanging_receiver_never_slows_a_request(tmp_path, database_url):
    """Delivery happens in the background: requests only write the outbox row."""
    clear_outbox(database_url)
    with WebhookReceiver(hold=True) as receiver:
        env = server_env(tmp_path, database_url, receiver.url)
        with ServerProcess(env, tmp_path) as server:
            created = server.post_json("/api/v1/nodes", {"mac_address": MAC})
            node_id = created.body["data"]["id"]
            path = f"/api/v1/nodes/{node_id}/state"
            assert server.patch_json(path, {"state": "pending"}).status == 200
            # The job is now stuck on the receiver, which answers only when released.
            assert receiver.arrived.wait(DEADLINE_SECONDS), server.log_tail()
            retired = server.patch_json(path, {"state": "retired"})
            held = not receiver.released.is_set()
            receiver.release()
    assert retired.status == 200
    assert held  # the request was answered while the delivery still hung


def test_url_credentials_go_out_as_basic_auth_and_never_reach_the_log(tmp_path, database_url):
    """A receiver behind Basic auth; the server's whole log is searched for the password."""
    clear_outbox(database_url)
    password = "s3cret-Pa%ss"  # written as s3cret-Pa%25ss in the URL
    basic = "Basic " + base64.b64encode(f"hooks:{password}".encode()).decode()
    with WebhookReceiver(statuses=[500], authorization=basic) as receiver:
        url = receiver.url.replace("http://", "http://hooks:s3cret-Pa%25ss@")
        env = server_env(tmp_path, database_url, url)
        with ServerProcess(env | {"PROVISIONER_LOG_LEVEL": "DEBUG"}, tmp_path) as server:
            created = server.post_json("/api/v1/nodes", {"mac_address": MAC})
            node_id = created.body["data"]["id"]
            moved = server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "pending"})
            assert moved.status == 200, moved
            receiver.wait_for(2, timeout=RETRY_SECONDS + DEADLINE_SECONDS)
            log = server.log_text()

    assert [hit.status for hit in receiver.received] == [500, 200], log
    assert {hit.headers["Authorization"] for hit in receiver.received} == {basic}
    assert "failed (attempt 1): HTTP 500" in log
    assert "to http://***@127.0.0.1:" in log
    assert "s3cret" not in log

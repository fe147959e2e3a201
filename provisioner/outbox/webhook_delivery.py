"""Sending the webhook outbox: claim due deliveries, POST them, record each result.

Nothing here holds a lock or a transaction while talking HTTP. A pass claims a small batch
in one short write transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
instances never claim the same row; SQLite has one writer) by pushing each row's
``next_attempt_at`` past the time the batch can take to send, commits, sends, and records
each result in another short transaction: delivered, or retried after ``retry_delay``.
A delivery still undelivered a day after its change is dropped with a warning, and so is
one whose receiver is no longer configured. A process killed mid-send leaves its claim to
expire, after which the delivery is retried: receivers get every notification at least
once, and ``X-Provisioner-Delivery`` lets them drop the rare duplicate.
"""

import logging
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm import scoped_session

from provisioner.models import WebhookDelivery
from provisioner.models import new_id
from provisioner.outbox.webhooks import DeliveryFailed
from provisioner.outbox.webhooks import render
from provisioner.outbox.webhooks import safe_url_name
from provisioner.store.transactions import write_transaction
from provisioner.timeutil import isoformat

log = logging.getLogger("provisioner.outbox.webhooks")

#: Seconds a receiver has to answer one delivery.
TIMEOUT_SECONDS = 5.0
MAX_AGE = timedelta(days=1)
MAX_RETRY_DELAY = timedelta(hours=1)
BATCH_SIZE = 10
#: A claimed row stays hidden from other deliverers this long: enough to send a whole batch.
CLAIM_LEASE = timedelta(seconds=BATCH_SIZE * TIMEOUT_SECONDS + 30)
#: Expired rows deleted per pass (the next pass takes the rest).
DROP_BATCH = 500

AnySession = Session | scoped_session[Session]
Sender = Callable[[str, bytes, dict[str, str], float], int]
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class DeliverySettings:
    """The receivers and the retry schedule, from the app's config."""

    receivers: list[dict[str, Any]]
    retry_seconds: float = 10.0
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DeliverySettings":
        return cls(config["WEBHOOKS"], retry_seconds=config["WEBHOOK_RETRY_SECONDS"])

    def receiver_for(self, url: str, fmt: str) -> dict[str, Any] | None:
        """The configured receiver a delivery was written for, if it is still configured."""
        for receiver in self.receivers:
            if receiver["url"] == url and receiver["format"] == fmt:
                return receiver
        return None


@dataclass(frozen=True)
class Claimed:
    """A claimed delivery, copied out of its row so no session is needed while sending."""

    id: int
    uuid: str
    event: str
    url: str
    format: str
    payload: dict[str, Any]
    attempts: int


@dataclass
class DeliveryRun:
    """What one pass did."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0


def retry_delay(attempts: int, base_seconds: float) -> timedelta:
    """The wait after ``attempts`` failures: base, 2×base, 4×base, ... at most an hour."""
    seconds = base_seconds * 2 ** min(max(attempts - 1, 0), 32)
    return min(timedelta(seconds=seconds), MAX_RETRY_DELAY)


def receiver_name(url: str) -> str:
    """A URL for logs: scheme and host only, never its credentials or path."""
    return safe_url_name(url)


def claim_due(session: AnySession, now: datetime, *, limit: int = BATCH_SIZE) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries, oldest first, in one short write transaction."""
    with write_transaction(session) as tx:
        rows = tx.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.delivered_at.is_(None), WebhookDelivery.next_attempt_at <= now)
            .order_by(WebhookDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            row.next_attempt_at = now + CLAIM_LEASE
        return [
            Claimed(row.id, row.uuid, row.event, row.url, row.format, row.payload, row.attempts)
            for row in rows
        ]


def record_result(
    session: AnySession, delivery: Claimed, error: str | None, now: datetime, retry_seconds: float
) -> None:
    """Mark a delivery delivered, or schedule its next attempt after a failure."""
    attempts = delivery.attempts + 1
    values: dict[str, Any] = {"attempts": attempts}
    if error is None:
        values |= {"delivered_at": now, "last_error": None}
    else:
        retry_at = now + retry_delay(attempts, retry_seconds)
        values |= {"last_error": error[:1000], "next_attempt_at": retry_at}
    with write_transaction(session) as tx:
        tx.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery.id, WebhookDelivery.delivered_at.is_(None))
            .values(**values)
        )


def drop_expired(session: AnySession, now: datetime) -> int:
    """Delete deliveries older than a day; warn about each undelivered one. Return those."""
    with write_transaction(session) as tx:
        rows = tx.execute(
            select(
                WebhookDelivery.id,
                WebhookDelivery.uuid,
                WebhookDelivery.event,
                WebhookDelivery.url,
                WebhookDelivery.attempts,
                WebhookDelivery.last_error,
                WebhookDelivery.delivered_at,
            )
            .where(WebhookDelivery.created_at < now - MAX_AGE)
            .limit(DROP_BATCH)
            .with_for_update(skip_locked=True)
        ).all()
        undelivered = [row for row in rows if row.delivered_at is None]
        for row in undelivered:
            log.warning(
                "webhook %s delivery %s to %s dropped: undelivered after a day "
                "(%d attempts, last error: %s)",
                row.event,
                row.uuid,
                receiver_name(row.url),
                row.attempts,
                row.last_error,
            )
        if rows:
            tx.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_([r.id for r in rows])))
    return len(undelivered)


def _forget(session: AnySession, delivery: Claimed) -> None:
    log.warning(
        "webhook %s delivery %s dropped: no receiver %s (%s) is configured any more",
        delivery.event,
        delivery.uuid,
        receiver_name(delivery.url),
        delivery.format,
    )
    with write_transaction(session) as tx:
        tx.execute(delete(WebhookDelivery).where(WebhookDelivery.id == delivery.id))


def attempt(
    delivery: Claimed, receiver: Mapping[str, Any], send: Sender, timeout: float
) -> str | None:
    """Send one delivery; return None on success, else why it failed."""
    outgoing = render(delivery.uuid, delivery.format, delivery.payload, receiver["secret"])
    try:
        send(delivery.url, outgoing.body, outgoing.headers, timeout)
    except DeliveryFailed as exc:
        return str(exc)
    return None


def _deliver(
    session: AnySession,
    delivery: Claimed,
    settings: DeliverySettings,
    clock: Clock,
    send: Sender,
    run: DeliveryRun,
) -> None:
    receiver = settings.receiver_for(delivery.url, delivery.format)
    if receiver is None:
        _forget(session, delivery)
        run.dropped += 1
        return
    error = attempt(delivery, receiver, send, settings.timeout)
    now = clock()
    record_result(session, delivery, error, now, settings.retry_seconds)
    if error is None:
        run.sent += 1
        return
    run.failed += 1
    log.warning(
        "webhook %s delivery %s to %s failed (attempt %d): %s; next attempt in %g s",
        delivery.event,
        delivery.uuid,
        receiver_name(delivery.url),
        delivery.attempts + 1,
        error,
        retry_delay(delivery.attempts + 1, settings.retry_seconds).total_seconds(),
    )


def deliver_due(
    session: AnySession, settings: DeliverySettings, clock: Clock, send: Sender
) -> DeliveryRun:
    """One pass of the delivery job: drop expired deliveries, then send every due one."""
    run = DeliveryRun(dropped=drop_expired(session, clock()))
    while True:
        batch = claim_due(session, clock())
        for delivery in batch:
            _deliver(session, delivery, settings, clock, send, run)
        if len(batch) < BATCH_SIZE:
            return run


def sample_payload(now: datetime) -> dict[str, Any]:
    """The payload ``provisioner webhooks test`` sends: event ``test``, a made-up node."""
    return {
        "event": "test",
        "node": {
            "id": "00000000-0000-4000-8000-000000000000",
            "mac_address": "52:54:00:00:00:00",
            "hostname": "webhook-test",
            "ip_address": None,
            "state": "installing",
            "workflow_id": None,
            "install_attempts": 1,
            "install_timeouts": 0,
        },
        "from_state": "pending",
        "to_state": "installing",
        "message": "A test delivery from provisioner: this receiver is reachable.",
        "at": isoformat(now),
    }


def send_sample(receiver: Mapping[str, Any], now: datetime, send: Sender) -> int:
    """Send the sample to one receiver right away; return its status or raise DeliveryFailed."""
    outgoing = render(new_id(), receiver["format"], sample_payload(now), receiver["secret"])
    return send(receiver["url"], outgoing.body, outgoing.headers, TIMEOUT_SECONDS)

"""Webhooks: an outbox written in the same transaction as the change, delivered later.

``lifecycle.transition`` and ``events.record_event`` note the rows they add on the
transaction's ``store.changes.Changes``. Just before the outermost commit, the store hands
them to ``_write_outbox`` (``changes.before_outermost_commit``), which turns them into
``WebhookDelivery`` rows, one per interested receiver, and that same commit writes them
with the change: a change never commits without its notifications, a rolled-back one
leaves none. The ``deliver_webhooks`` job (``scheduler.py``) then sends them; see
``deliver_due``. What is announced:

- ``state_changed``: every move made through ``lifecycle.transition``;
- ``install_failed``: a move into ``install_failed`` (the attempts are used up);
- ``install_timeout``: every ``install_timeout`` event (the sweeper's, or a boot's past the
  deadline);
- ``stalled``: the first timeout of a provisioning episode, the moment the node enters the
  stalled feed. (``no_first_boot`` listings come from the clock alone, with no write to hang
  a notification on; monitoring reads them from the feed or ``/metrics``.)
"""

import base64
import hashlib
import hmac
import http.client
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from flask import Flask
from flask import current_app
from flask import has_app_context
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from provisioner.domain.events import EventType
from provisioner.domain.events import Recorded
from provisioner.domain.lifecycle import Move
from provisioner.domain.lifecycle import State
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import WebhookDelivery
from provisioner.store import changes
from provisioner.timeutil import isoformat

log = logging.getLogger(__name__)

#: Events people would want to be woken for: ntfy gets a higher priority and a warning tag.
URGENT_EVENTS = {"install_failed", "install_timeout", "stalled"}
#: Discord refuses messages over 2000 characters; ntfy keeps 4096 bytes.
DISCORD_LIMIT = 2000
NTFY_LIMIT = 3000
USER_AGENT = "provisioner-webhooks"
#: Where the app keeps its sender, ``post`` (tests put a fake there).
SENDER_KEY = "provisioner.webhook_sender"


@dataclass(frozen=True)
class Notice:
    """One webhook event to announce: its name and the JSON payload receivers get."""

    event: str
    payload: dict[str, Any]
    at: datetime


def node_summary(node: Node | None, node_id: str) -> dict[str, Any]:
    """The node fields a payload carries (just the id if the node is gone)."""
    if node is None:
        return {"id": node_id}
    return {
        "id": node.id,
        "mac_address": node.mac_address,
        "hostname": node.hostname,
        "ip_address": node.ip_address,
        "state": node.state,
        "workflow_id": node.workflow_id,
        "install_attempts": node.install_attempts,
        "install_timeouts": node.install_timeouts,
    }


def make_notice(
    event_name: str,
    node: dict[str, Any],
    move: NodeStateLog | Move | None,
    message: str | None,
    at: datetime,
) -> Notice:
    """A notice with the documented payload: event, node, from/to state, message, at."""
    payload = {
        "event": event_name,
        "node": node,
        "from_state": move.from_state if move else None,
        "to_state": move.to_state if move else None,
        "message": message,
        "at": isoformat(at),
    }
    return Notice(event_name, payload, at)


def _is_move(change: Any) -> bool:
    return isinstance(change, NodeStateLog | Move)


def _announced(change: Any) -> bool:
    """Whether a row added in the transaction is one webhooks announce, and still there."""
    if not _is_move(change) and change.event_type != EventType.INSTALL_TIMEOUT:
        return False
    if isinstance(change, Move | Recorded):
        return True  # inserted in bulk by the transaction itself, never in a savepoint
    return inspect(change).persistent  # not if added inside a savepoint since rolled back


def notices_for(session: Session, changes: list[Any]) -> list[Notice]:
    """The webhook events that the rows added in a transaction stand for, in order."""
    notices = []
    moves: dict[str, NodeStateLog | Move] = {}
    for change in filter(_announced, changes):
        node = node_summary(session.get(Node, change.node_id), change.node_id)
        at = change.created_at
        if _is_move(change):
            moves[change.node_id] = change
            notices.append(make_notice("state_changed", node, change, change.comment, at))
            if change.to_state == State.INSTALL_FAILED:
                notices.append(make_notice("install_failed", node, change, change.comment, at))
            continue
        # An install_timeout event follows the move it caused (sweeper.handle_stall).
        move = moves.get(change.node_id)
        notices.append(make_notice("install_timeout", node, move, change.message, at))
        if node.get("install_timeouts") == 1:
            notices.append(make_notice("stalled", node, move, change.message, at))
    return notices


@changes.before_outermost_commit
def _write_outbox(session: Session, rows: list[Any]) -> None:
    """Add the outbox rows for this transaction's ``rows``; the commit's flush writes them."""
    if not has_app_context():
        return
    receivers = current_app.config.get("WEBHOOKS") or []
    if not receivers:
        return
    session.flush()
    for notice in notices_for(session, rows):
        for receiver in receivers:
            if notice.event in receiver["events"]:
                session.add(
                    WebhookDelivery(
                        event=notice.event,
                        url=receiver["url"],
                        format=receiver["format"],
                        payload=notice.payload,
                        attempts=0,
                        created_at=notice.at,
                        next_attempt_at=notice.at,
                    )
                )


# -- what receivers get ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """The exact bytes and headers of one POST."""

    body: bytes
    headers: dict[str, str]


def sign(secret: str, body: bytes) -> str:
    """The ``X-Provisioner-Signature`` value: ``sha256=`` and the HMAC of the body."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def describe(payload: Mapping[str, Any]) -> tuple[str, str]:
    """A one-line title and a short text, for people (ntfy, Discord)."""
    node = payload["node"]
    name = node.get("hostname") or node.get("mac_address") or node["id"]
    move = f"{payload['from_state']} -> {payload['to_state']}" if payload["to_state"] else ""
    titles = {
        "state_changed": f"{name}: {move}",
        "install_failed": f"{name}: install failed",
        "install_timeout": f"{name}: install timed out",
        "stalled": f"{name}: install stalled",
    }
    title = titles.get(payload["event"], f"{name}: {payload['event']}")
    lines = [payload["message"]] if payload.get("message") else []
    if move and payload["event"] != "state_changed":
        lines.append(f"Moved {move}.")
    facts = [f"node {node['id']}"]
    if node.get("mac_address"):
        facts.append(f"MAC {node['mac_address']}")
    if node.get("state"):
        facts.append(f"now {node['state']}")
    lines.append(", ".join(facts))
    lines.append(f"at {payload['at']}")
    return title, "\n".join(lines)


def _ascii(text: str) -> str:
    """HTTP header values must be Latin-1; keep titles plain ASCII."""
    return text.encode("ascii", "replace").decode("ascii")


def render(delivery_id: str, fmt: str, payload: Mapping[str, Any], secret: str) -> Outgoing:
    """The request for one delivery in the receiver's format, signed when it has a secret."""
    headers = {
        "User-Agent": USER_AGENT,
        "X-Provisioner-Event": payload["event"],
        "X-Provisioner-Delivery": delivery_id,
    }
    if fmt == "json":
        document = {"delivery": delivery_id, **payload}
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    elif fmt == "ntfy":
        title, text = describe(payload)
        body = text[:NTFY_LIMIT].encode()
        urgent = payload["event"] in URGENT_EVENTS
        headers |= {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _ascii(title),
            "Priority": "high" if urgent else "default",
            "Tags": "warning" if urgent else "computer",
        }
    else:
        title, text = describe(payload)
        # allowed_mentions: a report's text must never ping @everyone.
        document = {
            "content": f"**{title}**\n{text}"[:DISCORD_LIMIT],
            "allowed_mentions": {"parse": []},
        }
        body = json.dumps(document, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    if secret:
        headers["X-Provisioner-Signature"] = sign(secret, body)
    return Outgoing(body, headers)


class DeliveryFailed(Exception):
    """The receiver was not reached or did not answer 2xx; the message says why."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer we do not follow: a POST must reach the configured URL."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Honours http(s)_proxy/no_proxy from the environment, like most outbound HTTP clients.
_OPENER = urllib.request.build_opener(_NoRedirects)


def safe_url_name(url: str) -> str:
    """A URL for logs and output: scheme and host, ``***@`` for any credentials.

    The path is left out too: Discord and ntfy URLs hold their secret there.
    """
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{'***@' if '@' in parts.netloc else ''}{host}"


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without ``user:password@``, and the Basic ``Authorization`` value it held."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, "Basic " + base64.b64encode(pair).decode("ascii")


def _scrub(message: str, url: str) -> str:
    """``message`` with the URL's credentials replaced by ``***`` (a receiver may echo them)."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at:
        return message
    password = userinfo.partition(":")[2]
    for secret in (userinfo, password, unquote(password)):
        if secret:
            message = message.replace(secret, "***")
    return message


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body`` to ``url``; return the 2xx status, or raise ``DeliveryFailed``.

    Credentials in the URL (``https://user:password@host/``) go out as Basic auth; no
    error message carries them.
    """
    try:
        return _post(url, body, headers, timeout)
    except DeliveryFailed as error:
        raise DeliveryFailed(_scrub(str(error), url)) from None


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    bare, authorization = split_credentials(url)
    headers = dict(headers) | ({"Authorization": authorization} if authorization else {})
    request = urllib.request.Request(bare, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(4096)
            return answer.status
    except urllib.error.HTTPError as error:
        with error:
            detail = error.read(200).decode("utf-8", "replace").strip()
        raise DeliveryFailed(f"HTTP {error.code}" + (f": {detail}" if detail else "")) from None
    except urllib.error.URLError as error:
        raise DeliveryFailed(f"cannot connect: {error.reason}") from None
    except TimeoutError:
        raise DeliveryFailed(f"no answer within {timeout:g} s") from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DeliveryFailed(str(error) or type(error).__name__) from None


def init_app(app: Flask) -> None:
    """Give the app its HTTP sender; the outbox writer already listens on every session."""
    app.extensions[SENDER_KEY] = post

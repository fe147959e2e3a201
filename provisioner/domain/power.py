"""Power rules: which node may do what, and the events every action and result leaves.

Each function runs in the caller's write transaction. None of them talks to a BMC: the
worker pool (``provisioner.power.worker``) does that between two short transactions, so
no database lock is ever held across network I/O.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from provisioner.domain.events import EventStatus
from provisioner.domain.events import record_event
from provisioner.models import Node
from provisioner.models import NodePower
from provisioner.models import PowerAction
from provisioner.power.base import SUPPORTED
from provisioner.power.base import Target
from provisioner.power.secrets import PasswordBox
from provisioner.store import power as store

#: The event a successful action leaves, by action; a failure leaves ``power_failed``.
RESULT_EVENTS = {action: f"power_{action}" for action in SUPPORTED["ipmi"]}
REQUESTED = "power_requested"
FAILED = "power_failed"
CONFIGURED = "power_configured"


class PowerRequestError(Exception):
    """A power request that cannot be carried out; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def describe(row: NodePower | None) -> dict[str, Any]:
    """The settings as the API and the dashboard show them: never the password."""
    if row is None:
        return {"driver": "manual", "address": None, "username": None, "password_set": False}
    return {
        "driver": row.driver,
        "address": row.address,
        "username": row.username,
        "password_set": row.password_encrypted is not None,
        "state": row.power_state,
        "state_at": row.power_state_at,
    }


def configure(
    session: Session, node: Node, spec: dict[str, Any], box: PasswordBox | None, now: datetime
) -> NodePower | None:
    """Set (or, with driver ``manual``, remove) the node's power settings.

    A password left out keeps the stored one while the driver and address stay the same;
    ``null`` removes it.
    """
    driver = spec["driver"]
    old = store.settings_of(session, node.id)
    if driver == "manual":
        store.delete_settings(session, node.id)
        record_event(
            session,
            node,
            CONFIGURED,
            now=now,
            message="power control: manual",
            note_on_node=False,
        )
        return None
    password = spec.get("password")
    if "password" in spec:
        sealed = box.seal(password) if password and box is not None else None
    elif old is not None and (old.driver, old.address) == (driver, spec["address"]):
        sealed = old.password_encrypted
    else:
        sealed = None
    row = store.save_settings(
        session,
        node.id,
        driver=driver,
        address=spec["address"],
        username=spec.get("username"),
        password_encrypted=sealed,
        now=now,
    )
    who = f" as {row.username}" if row.username else ""
    record_event(
        session,
        node,
        CONFIGURED,
        now=now,
        message=f"power control: {driver} at {row.address}{who}",
        metadata={"driver": driver, "password_set": sealed is not None},
        note_on_node=False,
    )
    return row


def request_action(
    session: Session, node: Node, action: str, requested_by: str, now: datetime
) -> PowerAction:
    """Queue ``action`` for the node, with its ``power_requested`` event."""
    row = store.settings_of(session, node.id)
    driver = row.driver if row is not None else "manual"
    if driver == "manual":
        raise PowerRequestError(
            "power", f"Node {node.id} has no power control (driver manual): set one first"
        )
    if action not in SUPPORTED[driver]:
        raise PowerRequestError("action", f"The {driver} driver cannot do {action!r}")
    queued = store.add_action(session, node.id, action, requested_by, now)
    record_event(
        session,
        node,
        REQUESTED,
        now=now,
        status=EventStatus.IN_PROGRESS,
        message=f"power {action} requested by {requested_by} ({driver})",
        metadata={"action_id": queued.id, "action": action, "driver": driver},
        note_on_node=False,
    )
    return queued


@dataclass(frozen=True)
class Started:
    """An action taken off the queue, with what the worker needs to carry it out."""

    action_id: int
    node_id: str
    action: str
    target: Target | None
    problem: str | None = None


def start(session: Session, action_id: int, box_of: Any, now: datetime) -> Started | None:
    """Mark a queued action running; None if it is not queued any more (done elsewhere).

    ``box_of()`` gives the PasswordBox; a password it cannot open becomes ``problem``.
    """
    action = store.get_action(session, action_id)
    if action is None or action.status != "queued":
        return None
    action.status = "running"
    row = store.settings_of(session, action.node_id)
    if row is None:
        return Started(action.id, action.node_id, action.action, None, "no power settings")
    try:
        target = target_of(session, row, box_of)
    except Exception as exc:  # noqa: BLE001 - PowerSecretError: said, never raised on
        return Started(action.id, action.node_id, action.action, None, str(exc))
    return Started(action.id, action.node_id, action.action, target)


def target_of(session: Session, row: NodePower, box_of: Any) -> Target | None:
    """What a driver needs to reach the node, its password decrypted (in memory only)."""
    node = session.get(Node, row.node_id)
    if node is None:
        return None
    password = box_of().open(row.password_encrypted) if row.password_encrypted else None
    return Target(
        driver=row.driver,
        address=row.address,
        username=row.username,
        password=password,
        mac_address=node.mac_address,
        uefi=node.boot_mode == "uefi",
    )


def finish(
    session: Session,
    action_id: int,
    now: datetime,
    *,
    state: str | None = None,
    error: str | None = None,
    kind: str | None = None,
) -> PowerAction | None:
    """Record the outcome: the action row, the last known state and one event."""
    action = store.get_action(session, action_id)
    if action is None:
        return None
    node = session.get(Node, action.node_id)
    action.status = "failed" if error else "succeeded"
    action.result = state
    action.error = error
    action.finished_at = now
    if node is None:
        return action
    meta: dict[str, Any] = {"action_id": action.id, "action": action.action}
    if error:
        meta["reason"] = kind or "error"
        record_event(
            session,
            node,
            FAILED,
            now=now,
            status=EventStatus.FAILED,
            message=f"power {action.action} failed: {error}",
            metadata=meta,
            note_on_node=False,
        )
        return action
    if state in ("on", "off"):
        store.note_state(session, node.id, state, now)
        meta["power_state"] = state
    said = f": machine is {state}" if state else ""
    record_event(
        session,
        node,
        RESULT_EVENTS[action.action],
        now=now,
        message=f"power {action.action} done{said}",
        metadata=meta,
        note_on_node=False,
    )
    return action


def reinstall_action(
    session: Session,
    node: Node,
    explicit: bool | None,
    by_default: bool,
    requested_by: str,
    now: datetime,
) -> PowerAction | None:
    """After a move to ``pending``: queue a netboot (boot from the network once, then
    power-cycle) when asked (``explicit``), or by the setting for a node with power control.

    Asked explicitly for a node without power control, it refuses (the caller's transaction,
    state change included, rolls back); by the setting, such a node is left alone.
    """
    if explicit is False or node.state != "pending":
        return None
    if not explicit:
        row = store.settings_of(session, node.id)
        if not by_default or row is None or "netboot" not in SUPPORTED[row.driver]:
            return None
    return request_action(session, node, "netboot", requested_by, now)

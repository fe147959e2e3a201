"""What a node's report does: the rules, and applying them; the one way in for every report.

Every report - ``POST /api/v1/report`` (JSON, legacy ``installation_*`` fields mapped) and
cloud-init's form-encoded ``phone_home`` - enters through ``receive_report``, given the
writer that runs its job (``group_commit.run_write``): the job finds the node, applies the
report-token rule (``check_reporter``), answers a repeated ``event_id`` from the stored
answer, and else applies the report (``take_report``).

Every report becomes a ``NodeEvent``, even one that does not fit the node's state: it is kept
with an ``effect`` saying why it was ignored, and is never an HTTP error, so an installer does
not retry it forever. ``plan_report`` holds the rules: from the node as read, it decides
the effect, the answer and whether the node moves; ``report_columns`` and ``event_row`` say
what the report writes. Two carry-outs apply a plan, and they write the same rows
(tests/api/test_report_paths.py proves it with generated nodes and reports): the ORM one
(``apply_report``, through ``lifecycle``) for a report that moves the node, and, for one that
moves nothing (heartbeats, progress: under a boot storm nearly all of the traffic), plain
SQL statements (one UPDATE, one INSERT) instead of the ORM's unit of work; in a group-commit
batch those are held back and sent for the whole batch at once (``database.defer_write``).
"""

from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from typing import Any
from typing import TypeVar

from sqlalchemy import Row
from sqlalchemy import bindparam
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from provisioner.domain.events import EventStatus
from provisioner.domain.events import EventType
from provisioner.domain.events import add_event
from provisioner.domain.events import insert_events
from provisioner.domain.lifecycle import State
from provisioner.domain.lifecycle import Trigger
from provisioner.domain.lifecycle import count_failure
from provisioner.domain.lifecycle import failure_effect
from provisioner.domain.lifecycle import record_install_failure
from provisioner.domain.lifecycle import transition
from provisioner.domain.report_tokens import TokenMatch
from provisioner.domain.report_tokens import match_report_token
from provisioner.models import Node
from provisioner.models import NodeEvent
from provisioner.store.nodes_repo import find_node
from provisioner.store.nodes_repo import node_mapping
from provisioner.store.nodes_repo import peek_node_by_ref_for_update
from provisioner.store.nodes_repo import peek_node_for_update
from provisioner.store.writes import defer_write
from provisioner.store.writes import settle_writes

#: The legacy ``installation_status`` values and the event each stands for.
LEGACY_STATUS = {
    "started": EventType.INSTALL_STARTED,
    "progress": EventType.INSTALL_PROGRESS,
    "complete": EventType.INSTALL_COMPLETE,
    "failed": EventType.INSTALL_FAILED,
}

#: Node columns a report may fill in.
HARDWARE_FIELDS = ("ip_address", "hostname", "vendor", "model", "serial_number", "system_uuid")


@dataclass(frozen=True)
class Report:
    """A validated ``POST /api/v1/report`` body, legacy fields already mapped."""

    event_type: EventType | None
    status: str = EventStatus.SUCCESS
    message: str | None = None
    progress: int | None = None
    metadata: dict[str, Any] | None = None
    client_event_id: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What applying an event did: the ``effect`` stored and the message for the reporter."""

    effect: str
    message: str
    event: NodeEvent | None = None


def report_from_body(body: dict[str, Any]) -> Report:
    """Build a ``Report`` from a validated body, mapping the legacy ``installation_*`` fields."""
    event_type = body.get("event")
    if event_type is None and body.get("installation_status"):
        event_type = LEGACY_STATUS[body["installation_status"]]
    event_type = EventType(event_type) if event_type else None
    progress = body.get("progress")
    if progress is None:
        progress = body.get("installation_progress")
    message = body.get("message")
    if message is None and event_type == EventType.INSTALL_FAILED:
        message = body.get("installation_error")
    status = body.get("status") or (
        EventStatus.FAILED if event_type == EventType.INSTALL_FAILED else EventStatus.SUCCESS
    )
    return Report(
        event_type=event_type,
        status=status,
        message=message,
        progress=progress,
        metadata=body.get("event_metadata"),
        client_event_id=body.get("event_id"),
        hardware={key: body[key] for key in HARDWARE_FIELDS if body.get(key) is not None},
    )


# -- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a report does to its node, decided from the node as read, before any write."""

    effect: str
    message: str
    #: Move the node here (``lifecycle.transition``) with this comment and metadata.
    target: State | None = None
    comment: str = ""
    metadata: dict[str, Any] | None = None
    #: Count a failed install attempt with this error (``lifecycle.record_install_failure``).
    failure: str | None = None
    #: Store this install progress.
    progress: int | None = None

    @property
    def moves(self) -> bool:
        return self.target is not None or self.failure is not None


def plan_report(node: Node | Row, report: Report, max_attempts: int) -> Plan:
    """The effect of ``report`` (which has an event) on a node in ``node.state``."""
    state, kind = node.state, report.event_type
    if kind == EventType.BOOT_STARTED:
        return Plan("logged", "Boot started event logged")
    if kind == EventType.HEARTBEAT:
        return Plan("logged", "Heartbeat received")
    if kind == EventType.INSTALL_STARTED and state == State.PENDING:
        return _move(state, State.INSTALLING, "Installation started", "installer reported start")
    if kind == EventType.INSTALL_STARTED and state == State.INSTALLING:
        return Plan("logged: already installing", "Installation started")
    if kind == EventType.INSTALL_PROGRESS and state == State.INSTALLING:
        progress = report.progress if report.progress is not None else node.progress
        shown = progress if progress is not None else 0
        return Plan(
            f"progress {shown}%", f"Installation progress: {shown}%", progress=report.progress
        )
    if kind == EventType.INSTALL_COMPLETE and state == State.INSTALLING:
        return _move(
            state, State.INSTALLED, "Installation completed", "installer reported completion"
        )
    if kind == EventType.INSTALL_FAILED and state == State.INSTALLING:
        error = report.message or "installer reported a failure"
        failure = count_failure(node.install_attempts, error, max_attempts)
        attempts, target = failure.attempts, failure.target
        if target == State.PENDING:
            message = f"Installation failed (attempt {attempts}), will retry"
        else:
            message = f"Installation failed after {attempts} attempts"
        return Plan(
            failure_effect(state, target, attempts, max_attempts),
            message,
            failure=error,
        )
    if kind == EventType.FIRST_BOOT and state == State.INSTALLED:
        return _move(
            state,
            State.ACTIVE,
            "First boot - node now active",
            "first boot reported",
            report.metadata,
        )
    return Plan(f"ignored: node is {state}", f"Event {kind} recorded but ignored: node is {state}")


def _move(
    state: str,
    target: State,
    message: str,
    comment: str,
    metadata: dict[str, Any] | None = None,
) -> Plan:
    return Plan(f"{state}→{target}", message, target=target, comment=comment, metadata=metadata)


STATUS_ONLY = Outcome("", "Status reported successfully")


def _stale(report: Report) -> Outcome:
    return Outcome(
        "ignored: report from a previous install attempt",
        f"Event {report.event_type} recorded but ignored: it belongs to a previous install "
        "attempt",
    )


# -- what a report writes -------------------------------------------------------------------


def report_columns(
    report: Report, plan: Plan | None, *, now: datetime, stale: bool
) -> dict[str, Any]:
    """The node columns a report sets besides a move (which ``lifecycle`` writes).

    ``plan`` is None for a status-only report (no event) and for a stale one; a stale report
    (sent with the previous install attempt's token) changes nothing on the node.
    """
    if stale:
        return {}
    columns: dict[str, Any] = {}
    if plan is not None and plan.progress is not None:
        columns["progress"] = plan.progress
    if report.event_type is not None:
        columns |= {
            "last_event_type": report.event_type,
            "last_event_status": report.status,
            "last_event_at": now,
        }
    return columns | report.hardware | {"last_seen_at": now, "updated_at": now}


def event_row(
    node_id: str, report: Report, outcome: Outcome, *, peer_ip: str | None, now: datetime
) -> dict[str, Any]:
    """The ``node_events`` row of a report (which has an event), by column name; its
    ``response`` is the answer's to fill in."""
    return {
        "node_id": node_id,
        "event_type": report.event_type,
        "status": report.status,
        "message": report.message,
        "progress": report.progress,
        "metadata": report.metadata,
        "ip_address": peer_ip,
        "effect": outcome.effect,
        "client_event_id": report.client_event_id,
        "response": None,
        "created_at": now,
    }


def _outcome(report: Report, plan: Plan | None) -> Outcome:
    if report.event_type is None:
        return STATUS_ONLY
    if plan is None:
        return _stale(report)
    return Outcome(plan.effect, plan.message)


# -- applying them: through the ORM ----------------------------------------------------------


def apply_report(
    session: Session,
    node: Node,
    report: Report,
    *,
    peer_ip: str | None,
    max_attempts: int,
    now: datetime,
    stale: bool = False,
) -> Outcome:
    """Apply ``report`` to the ORM ``node`` and record it, in the caller's write transaction.

    A ``stale`` report (sent with the previous install attempt's token) is recorded but
    changes nothing on the node.
    """
    plan = None
    if not stale and report.event_type is not None:
        plan = plan_report(node, report, max_attempts)
    for key, value in report_columns(report, plan, now=now, stale=stale).items():
        setattr(node, key, value)
    outcome = _outcome(report, plan)
    if report.event_type is None:
        return outcome
    if plan is not None:
        _carry_out(session, node, plan, max_attempts=max_attempts, now=now)
    row = event_row(node.id, report, outcome, peer_ip=peer_ip, now=now)
    row["metadata_"] = row.pop("metadata")
    event = add_event(session, NodeEvent(**row))
    return Outcome(outcome.effect, outcome.message, event)


def _carry_out(session: Session, node: Node, plan: Plan, *, max_attempts: int, now: datetime):
    if plan.failure is not None:
        record_install_failure(
            session,
            node,
            plan.failure,
            max_attempts=max_attempts,
            triggered_by=Trigger.NODE_REPORT,
            now=now,
        )
    elif plan.target is not None:
        transition(
            session,
            node,
            plan.target,
            triggered_by=Trigger.NODE_REPORT,
            now=now,
            comment=plan.comment,
            metadata=plan.metadata,
        )


# -- the one way in --------------------------------------------------------------------------


#: The answer to a report, made from the node after it and the outcome; kept for replays.
Respond = Callable[[Node | Mapping[str, Any], Outcome], dict[str, Any]]

T = TypeVar("T")
#: Runs a job in a write transaction and returns its result (``group_commit.run_write``).
Writer = Callable[[Callable[[Session], T]], T]


@dataclass(frozen=True)
class Reporter:
    """Whom a report names and what it presents."""

    #: The node's normalised MAC address, or with ``by_ref`` its id or MAC in any form.
    ref: str
    token: str | None
    by_ref: bool = False
    #: The 404 message when no node matches.
    not_found: str = "Node not found"


@dataclass(frozen=True)
class ReportSettings:
    """The server's side of a report: the token rule, the attempt limit, the clock."""

    token_mode: bool
    peer_ip: str | None
    max_attempts: int
    now: datetime
    respond: Respond


@dataclass(frozen=True)
class Refused:
    """A report refused before anything was written: ``status`` 401 (``reason`` "token")
    or 404 (``reason`` "not_found")."""

    status: int
    message: str
    reason: str


BAD_TOKEN = Refused(401, "Missing or invalid report token for this node", "token")


def check_reporter(
    node: Node | Row | None, reporter: Reporter, token_mode: bool
) -> TokenMatch | None | Refused:
    """The token rule: in token mode a report needs the node's current token (or the previous
    attempt's, which makes it stale). A bad token is refused before the node's existence is
    told, so a 401 reveals nothing. The match, None in open mode, or the refusal."""
    match = None
    if token_mode:
        match = match_report_token(node, reporter.token)
        if match is TokenMatch.NONE:
            return BAD_TOKEN
    if node is None:
        return Refused(404, reporter.not_found, "not_found")
    return match


def receive_report(
    write: Writer, reporter: Reporter, report: Report, settings: ReportSettings
) -> dict[str, Any] | Refused:
    """Every report's way in: run its job (``report_job``) with ``write``; the answer, or
    the refusal (nothing written)."""
    return write(report_job(reporter, report, settings))


def report_job(
    reporter: Reporter, report: Report, settings: ReportSettings, *, fast: bool = True
) -> Callable[[Session], dict[str, Any] | Refused]:
    """The write of one report, for a writer: find and lock the node, check the token,
    answer a repeated ``event_id`` from the stored answer, else apply the report
    (``take_report``; ``fast=False`` applies every report through the ORM, the reference
    the parity tests compare the fast path with)."""

    def job(session: Session) -> dict[str, Any] | Refused:
        if reporter.by_ref:
            seen = peek_node_by_ref_for_update(session, reporter.ref)
        else:
            seen = peek_node_for_update(session, reporter.ref)
        match = check_reporter(seen, reporter, settings.token_mode)
        if isinstance(match, Refused):
            return match
        assert seen is not None
        replayed = replayed_answer(session, seen.id, report.client_event_id)
        if replayed is not None:
            return replayed.response
        return take_report(
            session,
            seen,
            report,
            peer_ip=settings.peer_ip,
            max_attempts=settings.max_attempts,
            now=settings.now,
            respond=settings.respond,
            stale=match is TokenMatch.PREVIOUS,
            fast=fast,
        )

    return job


_REPLAYED = select(NodeEvent.response).where(
    NodeEvent.node_id == bindparam("node_id"),
    NodeEvent.client_event_id == bindparam("client_event_id"),
)
#: SET takes the columns named in the parameters (SQLAlchemy compiles and caches one
#: statement per set of names): built once, not per report.
_UPDATE_NODE = update(Node.__table__).where(Node.__table__.c.id == bindparam("node_id"))


def replayed_answer(session: Session, node_id: str, client_event_id: str | None) -> Row | None:
    """The stored answer (``.response``) to an earlier report with this client-chosen id."""
    if client_event_id is None:
        return None
    query = _REPLAYED.params(node_id=node_id, client_event_id=client_event_id)
    return session.connection().execute(query).first()


def take_report(
    session: Session,
    seen: Row,
    report: Report,
    *,
    peer_ip: str | None,
    max_attempts: int,
    now: datetime,
    respond: Respond,
    stale: bool = False,
    fast: bool = True,
) -> dict[str, Any]:
    """Apply ``report`` to the node read as ``seen`` (``nodes_repo.peek_node_for_update``);
    return the answer.

    Runs in the caller's write transaction. A report that moves the node loads it through
    the ORM and goes through ``lifecycle`` (``apply_report``); any other is written with one
    UPDATE of the node and one INSERT of its event (``_take_quiet_report``), unless ``fast``
    is off. With a client event id, the answer is stored with the event.
    """
    plan = None
    if not stale and report.event_type is not None:
        plan = plan_report(seen, report, max_attempts)
    if fast and (plan is None or not plan.moves):
        return _take_quiet_report(
            session, seen, report, plan, peer_ip=peer_ip, now=now, respond=respond, stale=stale
        )
    settle_writes(session)  # the batch's earlier events keep their place before this one's
    node = find_node(session, seen.mac_address, for_update=True)
    assert node is not None  # locked and read in this transaction
    outcome = apply_report(
        session, node, report, peer_ip=peer_ip, max_attempts=max_attempts, now=now, stale=stale
    )
    answer = respond(node, outcome)
    if outcome.event is not None and report.client_event_id is not None:
        outcome.event.response = answer
    # Written now, not at commit: a later report in the same group-commit batch reads and
    # updates this row with plain statements, which a late flush would undo.
    session.flush()
    return answer


def _take_quiet_report(
    session: Session,
    seen: Row,
    report: Report,
    plan: Plan | None,
    *,
    peer_ip: str | None,
    now: datetime,
    respond: Respond,
    stale: bool,
) -> dict[str, Any]:
    """``take_report`` for a report that moves nothing: the same columns and event row as
    ``apply_report``, written with plain statements, no ORM objects.

    ``plan`` is the report's plan, or None for a status-only or a stale report.
    """
    changes = report_columns(report, plan, now=now, stale=stale)
    if changes:
        defer_write(session, _UPDATE_NODE, changes | {"node_id": seen.id}, seen.mac_address)
    outcome = _outcome(report, plan)
    answer = respond(node_mapping(seen, changes), outcome)
    if report.event_type is None:
        return answer
    row = event_row(seen.id, report, outcome, peer_ip=peer_ip, now=now)
    if report.client_event_id is not None:
        row["response"] = answer
    insert_events(session, [row], key=seen.mac_address)
    return answer

"""Node reports (``POST /api/v1/report``) and the events API."""

from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from flask import current_app
from flask import jsonify
from flask import request
from sqlalchemy.orm import Session

from provisioner.domain import reports
from provisioner.domain.events import EventType
from provisioner.domain.reports import Outcome
from provisioner.domain.reports import Refused
from provisioner.domain.reports import Report
from provisioner.domain.reports import Reporter
from provisioner.domain.reports import ReportSettings
from provisioner.domain.reports import receive_report
from provisioner.domain.reports import report_from_body
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.store import eventlog
from provisioner.store.group_commit import run_write
from provisioner.store.nodes_repo import find_by_ref
from provisioner.web.api import Blueprint
from provisioner.web.api import fail
from provisioner.web.context import get_node_or_404
from provisioner.web.context import now
from provisioner.web.context import peer_ip
from provisioner.web.context import presented_token
from provisioner.web.metrics import REPORTS_REJECTED
from provisioner.web.schemas import EventListEnvelope
from provisioner.web.schemas import EventStreamQuerySchema
from provisioner.web.schemas import EventStreamSchema
from provisioner.web.schemas import NodeEnvelope
from provisioner.web.schemas import NodeEventsQuerySchema
from provisioner.web.schemas import NodeSchema
from provisioner.web.schemas import ReportSchema

bp = Blueprint("events", __name__, description="Node reports and the event log")
NODE_SCHEMA = NodeSchema()


def _answer(node: Node | Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    return {"success": True, "data": NODE_SCHEMA.dump(node), "message": outcome.message}


def _settings(settings: Mapping[str, Any] | None = None) -> ReportSettings:
    """This request's ``ReportSettings`` (or ``settings``' peer_ip, max_attempts, now,
    respond), with the configured token rule."""
    token_mode = current_app.config["REPORT_AUTH"] == "token"
    if settings is not None:
        return ReportSettings(token_mode=token_mode, **settings)
    return ReportSettings(
        token_mode=token_mode,
        peer_ip=peer_ip(),
        max_attempts=current_app.config["MAX_INSTALL_ATTEMPTS"],
        now=now(),
        respond=_answer,
    )


def _answered(result: dict[str, Any] | Refused) -> dict[str, Any]:
    """The answer, or the refusal as its HTTP error (401 counted as a rejected report)."""
    if isinstance(result, Refused):
        if result.reason == "token":
            REPORTS_REJECTED.labels(reason="token").inc()
        fail(result.status, result.message)
    return result  # type: ignore[return-value]


@bp.route("/api/v1/report", methods=["POST"])
@bp.arguments(ReportSchema())
@bp.response(200, NodeEnvelope)
@bp.alt_response(404, description="No node has this MAC address (open report mode)")
@bp.alt_response(401, description="Missing or invalid report token (token mode)")
def report(body: dict[str, Any]):
    """Record what an installer or a booted node reports, and move the node accordingly.

    A report that does not fit the node's state is still recorded (its ``effect`` says it was
    ignored) and answered 200, so installers never retry it. A repeated ``event_id`` returns
    the first response again and writes nothing.
    """
    mac = body["mac_address"]
    reporter = Reporter(mac, presented_token(request), not_found=f"No node with MAC address {mac}")
    result = receive_report(run_write, reporter, report_from_body(body), _settings())
    return jsonify(_answered(result))


def report_job(
    mac: str, token: str | None, node_report: Report, settings: Mapping[str, Any]
) -> Callable[[Session], dict[str, Any]]:
    """The write of one ``POST /api/v1/report`` (``reports.report_job``) as a group-writer
    job that refuses with its HTTP error, given ``settings``: peer_ip, max_attempts, now,
    respond."""

    def job(session: Session) -> dict[str, Any]:
        reporter = Reporter(mac, token, not_found=f"No node with MAC address {mac}")
        return _answered(reports.report_job(reporter, node_report, _settings(settings))(session))

    return job


PHONE_HOME_FIELDS = (
    "instance_id",
    "hostname",
    "fqdn",
    "pub_key_rsa",
    "pub_key_ecdsa",
    "pub_key_ed25519",
    "pub_key_dsa",
)


@bp.route("/api/v1/nodes/<ref>/phone-home", methods=["POST"])
@bp.response(200, NodeEnvelope)
def phone_home(ref: str):
    """cloud-init ``phone_home``: a form-encoded first-boot report (``installed → active``).

    Point cloud-init at ``<server>/api/v1/nodes/<id>/phone-home?token=<report token>``; the
    fields it posts (instance id, host names, host keys) become the event's metadata. It
    takes the same way as ``POST /api/v1/report`` (``reports.receive_report``).
    """
    fields = {key: request.form[key][:8192] for key in PHONE_HOME_FIELDS if key in request.form}
    node_report = Report(
        event_type=EventType.FIRST_BOOT,
        message="cloud-init phone_home",
        metadata=fields,
    )
    reporter = Reporter(
        ref, presented_token(request), by_ref=True, not_found=f"Node {ref[:80]!r} not found"
    )
    return jsonify(_answered(receive_report(run_write, reporter, node_report, _settings())))


@bp.route("/api/v1/nodes/<ref>/events")
@bp.arguments(NodeEventsQuerySchema(), location="query")
@bp.response(200, EventListEnvelope)
def node_events(args: dict[str, Any], ref: str):
    """A node's events, newest first."""
    node = get_node_or_404(ref)
    page, total = eventlog.node_events(
        db.session,
        node.id,
        event_type=args.get("event_type"),
        limit=args["limit"],
        offset=args["offset"],
    )
    return {"success": True, "data": page, "total": total}


@bp.route("/api/v1/events")
@bp.arguments(EventStreamQuerySchema(), location="query")
@bp.response(200, EventStreamSchema)
def event_stream(args: dict[str, Any]):
    """Events across all nodes after a cursor, oldest first; follow with ``next_cursor``."""
    node_id = None
    if args.get("node"):
        node = find_by_ref(db.session, args["node"])
        if node is None:
            fail(404, f"Node {args['node'][:80]!r} not found")
        node_id = node.id
    page, cursor = eventlog.event_stream(
        db.session,
        since=args["since"],
        event_type=args.get("event_type"),
        node_id=node_id,
        limit=args["limit"],
    )
    return {"success": True, "data": page, "next_cursor": cursor}

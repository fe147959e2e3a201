"""The dashboard's power panel: the node's driver, its last known power state, and one
button per action. Each POST queues the action like ``POST /api/v1/nodes/<id>/power``;
the outcome shows in the timeline as a ``power_*`` event. The password is never shown."""

from typing import Any

from flask import current_app
from flask import flash
from flask import request
from werkzeug.wrappers import Response

from provisioner.domain import power as rules
from provisioner.extensions import db
from provisioner.power.base import SUPPORTED
from provisioner.power.worker import service
from provisioner.store import power as store
from provisioner.store.transactions import write_transaction
from provisioner.web.context import now
from provisioner.web.dashboard.actions import back_to
from provisioner.web.dashboard.actions import locked_node
from provisioner.web.dashboard.views import bp

#: The buttons, in order: action, label, confirmation ('' for none).
BUTTONS = [
    ("status", "Refresh status", ""),
    ("on", "Power on", ""),
    ("off", "Power off", "Power this machine off now (no clean shutdown)?"),
    ("cycle", "Power cycle", "Reset this machine now?"),
    ("netboot", "Netboot once + cycle", "Boot this machine from the network once, now?"),
]


@bp.app_template_global()
def power_panel(node_id: str) -> dict[str, Any]:
    """What the node page shows of power control (never the password)."""
    view = rules.describe(store.settings_of(db.session, node_id))
    allowed = SUPPORTED[view["driver"]]
    view["buttons"] = [button for button in BUTTONS if button[0] in allowed]
    return view


@bp.route("/nodes/<ref>/power", methods=["POST"])
def power_action(ref: str) -> Response:
    """Queue one power action for the node."""
    action = request.form.get("power_action", "")
    try:
        with write_transaction(db.session):
            node = locked_node(ref)
            queued = rules.request_action(db.session, node, action, "dashboard", now())
    except rules.PowerRequestError as exc:
        flash(str(exc), "error")
        return back_to(ref)
    service(current_app).submit([queued.id])
    flash(f"Power {action} queued: its outcome appears in the timeline", "ok")
    return back_to(ref)

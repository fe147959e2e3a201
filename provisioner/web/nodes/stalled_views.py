"""``GET /api/v1/nodes/stalled``: the stalled-installs JSON feed for monitoring."""

from typing import Any

from flask import current_app

from provisioner.domain.stalled_feed import stalled_feed
from provisioner.domain.sweeper import StallRules
from provisioner.extensions import db
from provisioner.web.context import now
from provisioner.web.nodes.views import bp
from provisioner.web.schemas import StalledFeedSchema
from provisioner.web.schemas import StalledQuerySchema


@bp.route("/api/v1/nodes/stalled")
@bp.arguments(StalledQuerySchema(), location="query")
@bp.response(200, StalledFeedSchema)
def stalled(args: dict[str, Any]):
    """Nodes stalled now, or whose current provisioning episode timed out; oldest first."""
    generated_at = now()
    items, total = stalled_feed(
        db.session, StallRules.from_config(current_app.config), generated_at, limit=args["limit"]
    )
    return {
        "success": True,
        "data": items,
        "total": total,
        "generated_at": generated_at,
        "timeout_minutes": current_app.config["INSTALL_TIMEOUT_MINUTES"],
    }

"""Node-facing installer support: rendered install configs and the report helper script."""

import re

from flask import Response
from flask import current_app
from flask import request

from provisioner.domain.booting import boot_variables
from provisioner.domain.groups import effective_workflow
from provisioner.domain.install_configs import ConfigNotFound
from provisioner.domain.install_configs import render_config
from provisioner.domain.report_script import render_report_script
from provisioner.domain.report_tokens import TokenMatch
from provisioner.domain.report_tokens import match_report_token
from provisioner.domain.workflows import WorkflowError
from provisioner.extensions import db
from provisioner.store.nodes_repo import find_by_ref
from provisioner.web.api import fail
from provisioner.web.boot.views import bp
from provisioner.web.context import presented_token
from provisioner.web.context import server_url
from provisioner.web.context import workflow_store
from provisioner.web.groups import node_group
from provisioner.web.metrics import REPORTS_REJECTED

TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
TEXT_RESPONSE = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def _render(ref: str, name: str, token: str | None) -> Response:
    if token is not None and not TOKEN_SHAPE.match(token):
        token = None  # never let an arbitrary string into a rendered shell script
    node = find_by_ref(db.session, ref)
    if current_app.config["REPORT_AUTH"] == "token":
        if match_report_token(node, token) is not TokenMatch.CURRENT:
            REPORTS_REJECTED.labels(reason="config_token").inc()
            fail(401, "Missing or invalid report token for this node")
    if node is None:
        fail(404, f"Node {ref[:80]!r} not found")
    group = node_group(node)
    choice = effective_workflow(node.workflow_id, group)
    if not choice.workflow_id:
        fail(404, f"Node {node.id} has no workflow")
    store = workflow_store()
    try:
        workflow = store.load(choice.workflow_id)
        extra = group.variables if group is not None else {}
        variables = boot_variables(node, server_url(), token or "", extra)
        text = render_config(
            current_app.extensions["provisioner.jinja"], workflow, name, variables
        )
    except ConfigNotFound as exc:
        fail(404, str(exc))
    except WorkflowError as exc:
        fail(500, f"Install config {name} cannot be rendered: {exc}")
    return Response(text, mimetype="text/plain")


@bp.route("/api/v1/nodes/<ref>/config/<name>")
@bp.doc(responses={"200": {"description": "The rendered config", **TEXT_RESPONSE}})
def install_config(ref: str, name: str):
    """A node's install config (kickstart, user-data, preseed...), rendered for it.

    In token mode the node's report token is required (``?token=``, ``X-Report-Token`` or
    ``Authorization: Bearer``).
    """
    return _render(ref, name, presented_token(request))


@bp.route("/api/v1/nodes/<ref>/seed/<token>/<name>")
@bp.doc(responses={"200": {"description": "The rendered config", **TEXT_RESPONSE}})
def install_config_seed(ref: str, token: str, name: str):
    """The same config with the token in the path, for cloud-init NoCloud seed URLs
    (``ds=nocloud;s=<server>/api/v1/nodes/<id>/seed/<token>/`` fetches ``user-data``,
    ``meta-data`` and ``vendor-data`` below it)."""
    return _render(ref, name, token)


@bp.route("/api/v1/report.sh")
@bp.doc(responses={"200": {"description": "POSIX sh report helper", **TEXT_RESPONSE}})
def report_script():
    """The ``provisioner-report`` shell helper, with this server's report URL built in.

    ``?mac=`` and ``?token=`` bake a node's MAC and report token into the copy served.
    """
    text = render_report_script(
        report_url=f"{server_url()}/api/v1/report",
        mac=request.args.get("mac", ""),
        token=request.args.get("token", ""),
    )
    return Response(text, mimetype="text/x-shellscript")

"""The console boot menu's node-facing side: building a node's menu, and taking its choice.

``GET /api/v1/boot/menu`` is what iPXE fetches when someone at the console picks a
workflow. Like ``/api/v1/boot`` it carries no token (a PXE ROM has none); instead the URL
is signed when the menu is served (``provisioner.domain.boot_menu``). A valid choice moves
the node exactly as the operator API does (``inventory.update_node`` sets the workflow,
``inventory.set_state`` moves it to ``pending``, in one transaction), then answers as
``/api/v1/boot`` would: the installer.
"""

import logging

from flask import Response
from flask import request
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from provisioner.domain import inventory
from provisioner.domain import ipxe
from provisioner.domain.boot_menu import MENU_PATH
from provisioner.domain.boot_menu import fitting_workflows
from provisioner.domain.boot_menu import offers_menu
from provisioner.domain.boot_menu import signature_problem
from provisioner.domain.booting import BootRequest
from provisioner.domain.booting import answer_boot
from provisioner.domain.lifecycle import State
from provisioner.extensions import db
from provisioner.store.nodes_repo import find_node
from provisioner.store.transactions import write_transaction
from provisioner.web.api import Blueprint
from provisioner.web.boot_settings import SCRIPT_RESPONSE
from provisioner.web.boot_settings import boot_settings
from provisioner.web.boot_settings import menu_settings
from provisioner.web.boot_settings import script_response
from provisioner.web.context import now
from provisioner.web.context import peer_ip
from provisioner.web.context import single_reads
from provisioner.web.context import workflow_store
from provisioner.web.schemas.fields import WORKFLOW_ID
from provisioner.web.schemas.fields import MacAddress

log = logging.getLogger(__name__)
bp = Blueprint("boot_menu", __name__, description="The console boot menu's choice (node-facing)")

SIGNATURE = r"^[0-9a-f]{64}\Z"


class ChoiceQuerySchema(Schema):
    mac = MacAddress(required=True)
    workflow = fields.String(required=True, validate=validate.Regexp(WORKFLOW_ID))
    expires = fields.Integer(required=True, validate=validate.Range(min=0, max=2**40))
    sig = fields.String(required=True, validate=validate.Regexp(SIGNATURE))


CHOICE_QUERY = ChoiceQuerySchema()


def _refused(reason: str, status: int = 403) -> Response:
    return script_response(ipxe.wait_and_exit(f"boot menu: {reason}"), status)


@bp.route(MENU_PATH)
@bp.doc(
    parameters=[
        {"in": "query", "name": name, "required": True, "schema": {"type": "string"}}
        for name in ("mac", "workflow", "expires", "sig")
    ],
    responses={code: SCRIPT_RESPONSE for code in ("200", "400", "403")},
)
def choose():
    """A workflow chosen at the console's boot menu (a signed URL from the menu): the node
    moves to pending as through the operator API, and the answer is its installer."""
    try:
        args = CHOICE_QUERY.load(request.args)
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.messages.items())
        return script_response(ipxe.request_error(problems), 400)
    settings = menu_settings()
    if not settings.enabled:
        return _refused("the boot menu is turned off")
    ip, moment, mac = peer_ip(), now(), args["mac"]
    store = workflow_store()
    with write_transaction(db.session):
        node = find_node(db.session, mac, for_update=True)
        if node is None:
            return _refused(f"unknown machine {mac}")
        problem = signature_problem(
            settings.key,
            args["sig"],
            node_id=node.id,
            mac=mac,
            state_changed_at=node.state_changed_at,
            expires=args["expires"],
            ip=ip,
            now=moment,
        )
        if problem is None and not offers_menu(settings, node.state, node.boot_menu, node.tags):
            problem = f"node {node.id} is not offered the menu in state {node.state}"
        offered = {w.id for w in fitting_workflows(store.entries(), node.arch, node.boot_mode)}
        if problem is None and args["workflow"] not in offered:
            problem = f"workflow {args['workflow']} is not on this machine's menu"
        if problem is not None:
            log.warning("boot menu choice for %s from %s refused: %s", mac, ip, problem)
            return _refused(problem)
        inventory.update_node(node, {"workflow_id": args["workflow"]}, store, moment)
        inventory.set_state(
            db.session,
            node,
            State.PENDING,
            moment,
            comment=f"chosen at the console boot menu (from {ip or 'unknown address'})",
        )
    log.info("boot menu: %s chose %s from %s", mac, args["workflow"], ip)
    script = answer_boot(
        db.session, BootRequest(mac=mac, peer_ip=ip), boot_settings(), now(), reads=single_reads()
    )
    return script_response(script)

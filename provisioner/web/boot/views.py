"""Node-facing boot endpoints: every answer is an iPXE script, even an error."""

import logging

from flask import Response
from flask import request
from marshmallow import ValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from provisioner.domain import ipxe
from provisioner.domain.booting import BootRequest
from provisioner.domain.booting import answer_boot
from provisioner.errors import is_unavailable
from provisioner.extensions import db
from provisioner.store.transactions import is_storage_full
from provisioner.web.api import Blueprint
from provisioner.web.boot_settings import boot_settings
from provisioner.web.context import now
from provisioner.web.context import peer_ip
from provisioner.web.context import server_url
from provisioner.web.context import single_reads
from provisioner.web.schemas import load_boot_query

log = logging.getLogger(__name__)
bp = Blueprint("boot", __name__, description="iPXE boot scripts (node-facing)")

SCRIPT_RESPONSE = {
    "description": "An iPXE script (first line `#!ipxe`)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}
BOOT_PARAMETERS = [
    {
        "in": "query",
        "name": name,
        "required": name == "mac",
        "schema": {"type": "string"},
        "description": description,
    }
    for name, description in (
        ("mac", "Boot NIC MAC address (iPXE ${net0/mac}); :, - or bare hex"),
        ("uuid", "SMBIOS system UUID (iPXE ${uuid})"),
        ("serial", "System serial number (iPXE ${serial})"),
        ("vendor", "Manufacturer (iPXE ${manufacturer})"),
        ("model", "Product name (iPXE ${product})"),
        ("hostname", "Host name, if known"),
        ("arch", "CPU architecture (iPXE ${buildarch})"),
        ("platform", "Firmware platform: pcbios or efi (iPXE ${platform})"),
        ("asset", "Asset tag (iPXE ${asset})"),
    )
]


def script_response(script: str, status: int = 200) -> Response:
    """Send an iPXE script as ``text/plain``."""
    return Response(script, status=status, mimetype="text/plain")


def _boot_mode(platform: str | None) -> str | None:
    return {"pcbios": "bios", "efi": "uefi"}.get((platform or "").lower())


@bp.route("/api/v1/boot")
@bp.doc(
    parameters=BOOT_PARAMETERS,
    responses={code: SCRIPT_RESPONSE for code in ("200", "400", "500", "503")},
)
def boot():
    """The script a machine should run now, chosen by its lifecycle state."""
    try:
        args = load_boot_query(request.args.to_dict())
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.messages.items())
        return script_response(ipxe.request_error(problems), 400)
    boot_request = BootRequest(
        mac=args["mac"],
        peer_ip=peer_ip(),
        system_uuid=args.get("uuid"),
        serial_number=args.get("serial"),
        vendor=args.get("vendor"),
        model=args.get("model"),
        hostname=args.get("hostname"),
        arch=args.get("arch"),
        boot_mode=_boot_mode(args.get("platform")),
        asset=args.get("asset"),
    )
    try:
        script = answer_boot(
            db.session, boot_request, boot_settings(), now(), reads=single_reads()
        )
    except Exception as exc:  # noqa: BLE001 - iPXE runs scripts, never a JSON error
        db.session.rollback()
        return _failure_script(exc)
    return script_response(script)


def _failure_script(exc: Exception) -> Response:
    """The script for a boot the server could not answer: the machine boots its own disk."""
    if is_storage_full(exc):
        # 200, so that iPXE runs it: the disk stays full until an operator acts, and a
        # machine should boot what it has meanwhile (iPXE never runs an error's body).
        log.error("boot answered with a local boot, database storage is full: %s", exc)
        return script_response(
            ipxe.server_trouble("database storage is full; booting the local disk")
        )
    if isinstance(exc, DataError):
        log.info("boot parameter refused by the database: %s", exc.orig)
        return script_response(ipxe.request_error("a value was refused by the database"), 400)
    if isinstance(exc, PoolTimeoutError) or (
        isinstance(exc, OperationalError) and is_unavailable(exc)
    ):
        log.warning("boot answered with a local boot, database unavailable: %s", exc)
        reason = "database unavailable; booting the local disk"
        return script_response(ipxe.server_trouble(reason), 503)
    log.error("boot failed", exc_info=exc)
    return script_response(ipxe.server_trouble("internal error; booting the local disk"), 500)


@bp.route("/api/v1/ipxe/boot.ipxe")
@bp.doc(responses={"200": SCRIPT_RESPONSE})
def chain_script():
    """The chain script for a DHCP server or USB stick: asks ``/api/v1/boot`` what to do."""
    return script_response(ipxe.chain(server_url()))

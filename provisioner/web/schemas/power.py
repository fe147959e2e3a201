"""Schemas of power control: a node's settings, an action request, an action's outcome."""

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates_schema

from provisioner.power.base import ACTIONS
from provisioner.power.base import DRIVERS
from provisioner.web.schemas.fields import HOSTNAME
from provisioner.web.schemas.fields import TAG
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import no_nul
from provisioner.web.schemas.fields import text

_PORT = re.compile(r"^[0-9]{1,5}\Z")


def _host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(HOSTNAME.match(host))


def _host_port(address: str) -> bool:
    """``host``, ``host:port`` or ``[v6]:port`` with a port in 1-65535."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            return False
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:
        host, port = address, None
    if port is not None and not (_PORT.match(port) and 0 < int(port) < 65536):
        return False
    return _host(host)


def _check_address(driver: str, address: str | None) -> str | None:
    """Why ``address`` does not suit ``driver``, or None."""
    if address is None:
        return "An address is required for this driver."
    if driver == "ipmi" and not _host_port(address):
        return 'Expected the BMC as "host" or "host:port".'
    if driver == "redfish":
        try:
            parts = urlsplit(address)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            return "Expected the Redfish system's http(s) URL."
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "Expected the Redfish system's http(s) URL."
        if parts.username or parts.password or parts.query or parts.fragment:
            return "The URL must not carry credentials, a query or a fragment."
    if driver == "wol":
        host, _, port = address.partition(":")
        try:
            ok = ipaddress.ip_address(host).version == 4
        except ValueError:
            ok = False
        if not ok or (port and not (_PORT.match(port) and 0 < int(port) < 65536)):
            return 'Expected the LAN\'s IPv4 broadcast address, as "a.b.c.d" or "a.b.c.d:port".'
    return None


class PowerSettingsSchema(Schema):
    """``{"driver", "address", "username", "password"}``; the password is write-only."""

    driver = fields.String(required=True, validate=validate.OneOf(DRIVERS))
    address = text(512, allow_none=True)
    username = text(255, allow_none=True)
    password = fields.String(
        load_only=True, allow_none=True, validate=[validate.Length(max=255), no_nul]
    )

    @validates_schema
    def _fits_driver(self, data: dict[str, Any], **kwargs: Any) -> None:
        driver = data.get("driver")
        if driver == "manual":
            extra = [key for key in ("address", "username", "password") if data.get(key)]
            if extra:
                raise ValidationError({extra[0]: ["Not used by the manual driver."]})
            return
        problem = _check_address(driver, data.get("address"))
        if problem:
            raise ValidationError({"address": [problem]})
        if driver == "wol" and (data.get("username") or data.get("password")):
            raise ValidationError({"username": ["Wake-on-LAN takes no credentials."]})


class PowerViewSchema(Schema):
    driver = fields.String(metadata={"enum": list(DRIVERS)})
    address = fields.String(allow_none=True)
    username = fields.String(allow_none=True)
    password_set = fields.Boolean(metadata={"description": "Whether a password is stored"})
    state = fields.String(allow_none=True, metadata={"description": "Last known: on or off"})
    state_at = fields.AwareDateTime(allow_none=True)


class PowerActionRequestSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))


class BulkPowerRequestSchema(PowerActionRequestSchema):
    tag = fields.String(required=True, validate=validate.Regexp(TAG))


class PowerActionSchema(Schema):
    id = fields.Integer()
    node_id = fields.String()
    action = fields.String(metadata={"enum": list(ACTIONS)})
    status = fields.String(metadata={"enum": ["queued", "running", "succeeded", "failed"]})
    requested_by = fields.String()
    result = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    finished_at = fields.AwareDateTime(allow_none=True)


PowerViewEnvelope = envelope(PowerViewSchema, "PowerViewEnvelope")
PowerActionEnvelope = envelope(PowerActionSchema, "PowerActionEnvelope")
PowerActionListEnvelope = list_envelope(PowerActionSchema, "PowerActionListEnvelope")

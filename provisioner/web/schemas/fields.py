"""Field types, patterns and envelopes shared by every schema."""

import re
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate

from provisioner.domain.ipaddr import InvalidIP
from provisioner.domain.ipaddr import normalize_ip
from provisioner.domain.lifecycle import State
from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import machine_mac

# Re-exported: the schemas take these from here, the rules from domain.validation.
from provisioner.domain.validation import CONFIG_NAME as CONFIG_NAME
from provisioner.domain.validation import MAX_TAGS
from provisioner.domain.validation import WORKFLOW_ID as WORKFLOW_ID
from provisioner.domain.validation import no_nul as no_nul
from provisioner.domain.validation import text as text

HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
# \Z, not $: "$" also matches before a trailing newline, which would let "web\n" through.
TAG = r"^[a-z0-9_-]{1,50}\Z"
STATES = [state.value for state in State]


class MacAddress(fields.String):
    """A machine's MAC address in any accepted form, loaded as ``aa:bb:cc:dd:ee:ff``; never
    all zeros, broadcast or multicast."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return machine_mac(text)
        except InvalidMac as exc:
            raise ValidationError(str(exc)) from None


class IPAddress(fields.String):
    """An IPv4 or IPv6 address, loaded as its canonical text (a zone id must be plain)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_ip(text)
        except InvalidIP as exc:
            raise ValidationError(str(exc)) from None


def tag_list(**kwargs: Any) -> fields.List:
    """A list of tags: each matches ``TAG``, at most ``MAX_TAGS`` of them."""
    return fields.List(
        fields.String(validate=validate.Regexp(TAG)),
        validate=validate.Length(min=kwargs.pop("min_length", None), max=MAX_TAGS),
        **kwargs,
    )


class Hostname(fields.String):
    """An RFC 1123 host name."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not HOSTNAME.match(text):
            raise ValidationError("Not a valid hostname (RFC 1123).")
        return text


def envelope(item: type[Schema], name: str) -> type[Schema]:
    """``{"success", "data", "message"}`` around one ``item``."""
    return Schema.from_dict(
        {
            "success": fields.Boolean(dump_default=True),
            "data": fields.Nested(item),
            "message": fields.String(allow_none=True),
        },
        name=name,
    )


def list_envelope(item: type[Schema], name: str) -> type[Schema]:
    """``{"success", "data": [...], "total"}`` around a page of ``item``."""
    return Schema.from_dict(
        {
            "success": fields.Boolean(dump_default=True),
            "data": fields.List(fields.Nested(item)),
            "total": fields.Integer(),
        },
        name=name,
    )


class MessageSchema(Schema):
    success = fields.Boolean()
    message = fields.String()

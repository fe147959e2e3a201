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

HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
# \Z, not $: "$" also matches before a trailing newline, which would let "web\n" through.
TAG = r"^[a-z0-9_-]{1,50}\Z"
MAX_TAGS = 50  # tags one node may carry: the create and tags endpoints share this cap
WORKFLOW_ID = r"^[A-Za-z0-9._-]{1,64}\Z"
CONFIG_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"
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


def no_nul(value: str) -> None:
    """Refuse a NUL character: PostgreSQL cannot store one in text (a query string can
    carry it as ``%00``; JSON bodies are checked as they are parsed)."""
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")


def text(max_length: int, **kwargs: Any) -> fields.String:
    """A bounded free-text field."""
    return fields.String(validate=[validate.Length(max=max_length), no_nul], **kwargs)


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

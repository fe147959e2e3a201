"""Schemas of the machine groups API and its dry-run (``/api/v1/groups/match``)."""

import re
from typing import Any

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates

from provisioner.domain.workflows import VARIABLES
from provisioner.web.schemas.fields import WORKFLOW_ID
from provisioner.web.schemas.fields import MacAddress
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import tag_list
from provisioner.web.schemas.fields import text

GROUP_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}\Z"
#: Names the API's own paths use below ``/api/v1/groups/``.
RESERVED_NAMES = frozenset({"match"})
VARIABLE_NAME = r"^[a-z_][a-z0-9_]{0,63}\Z"
#: Variables a group may not set: the server's own, and the workflow's id and name.
BUILT_IN_VARIABLES = frozenset(VARIABLES) | {"workflow_id", "workflow_name"}
MAX_VARIABLES = 50
ARCHITECTURE = r"^[A-Za-z0-9_-]{1,32}\Z"
PLATFORMS = ["pcbios", "efi"]
_PREFIX = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){0,5}\Z")


class MacPrefix(fields.String):
    """One to six octets of a MAC address (``52:54:00``), loaded colon-separated."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text_value = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        if not _PREFIX.match(text_value):
            raise ValidationError("Not a MAC prefix (one to six octets, e.g. 52:54:00).")
        digits = text_value.replace(":", "").replace("-", "")
        return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def _glob(**kwargs: Any) -> fields.String:
    return text(
        255,
        allow_none=True,
        metadata={"description": "Case-insensitive glob (*, ?, [..]) on what iPXE reports"},
        **kwargs,
    )


class GroupFieldsSchema(Schema):
    """What an operator sets on a group (every field optional: PATCH uses it as it is)."""

    description = text(4096)
    priority = fields.Integer(validate=validate.Range(min=-1000, max=1000))
    mac_prefix = MacPrefix(allow_none=True)
    tags = tag_list(allow_none=True)
    architecture = fields.String(allow_none=True, validate=validate.Regexp(ARCHITECTURE))
    platform = fields.String(allow_none=True, validate=validate.OneOf(PLATFORMS))
    manufacturer = _glob()
    product = _glob()
    serial = _glob()
    uuid = text(64, allow_none=True)
    workflow_id = fields.String(allow_none=True, validate=validate.Regexp(WORKFLOW_ID))
    variables = fields.Dict(
        keys=fields.String(validate=validate.Regexp(VARIABLE_NAME)),
        values=text(1024),
        allow_none=True,
        validate=validate.Length(max=MAX_VARIABLES),
        metadata={"description": "Template variables for the group's machines"},
    )
    auto_install = fields.Boolean()

    @validates("variables")
    def _not_built_in(self, value: dict[str, str] | None, **kwargs: Any) -> None:
        clash = sorted(set(value or {}) & BUILT_IN_VARIABLES)
        if clash:
            raise ValidationError(f"{clash[0]!r} is a built-in variable; choose another name.")

    @validates("tags")
    def _unique_tags(self, value: list[str] | None, **kwargs: Any) -> None:
        if value and len(set(value)) != len(value):
            raise ValidationError("Tags must not repeat.")


class GroupCreateSchema(GroupFieldsSchema):
    name = fields.String(required=True, validate=validate.Regexp(GROUP_NAME))

    @validates("name")
    def _not_reserved(self, value: str, **kwargs: Any) -> None:
        if value in RESERVED_NAMES:
            raise ValidationError(f"{value!r} is reserved.")


class GroupSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    description = fields.String()
    priority = fields.Integer()
    mac_prefix = fields.String(allow_none=True)
    tags = fields.List(fields.String(), allow_none=True)
    architecture = fields.String(allow_none=True)
    platform = fields.String(allow_none=True)
    manufacturer = fields.String(allow_none=True)
    product = fields.String(allow_none=True)
    serial = fields.String(allow_none=True)
    uuid = fields.String(allow_none=True)
    workflow_id = fields.String(allow_none=True)
    variables = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    auto_install = fields.Boolean()
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class GroupMatchQuerySchema(Schema):
    """A MAC, and optionally the facts iPXE would send and the node's tags."""

    class Meta:
        unknown = EXCLUDE

    mac = MacAddress(required=True)
    tags = fields.String(
        validate=validate.Length(max=2600),
        metadata={"description": "Comma-separated tags (else a known node's own)"},
    )
    arch = fields.String(validate=validate.Regexp(ARCHITECTURE))
    platform = fields.String(validate=validate.OneOf(PLATFORMS))
    manufacturer = text(255)
    product = text(255)
    serial = text(255)
    uuid = text(64)

    @pre_load
    def _drop_empty(self, data: Any, **kwargs: Any) -> Any:
        return {key: value for key, value in data.items() if value != ""}

    @validates("tags")
    def _tags(self, value: str, **kwargs: Any) -> None:
        for tag in value.split(","):
            if not re.match(r"^[a-z0-9_-]{1,50}\Z", tag):
                raise ValidationError(f"Not a tag: {tag[:50]!r}.")


class CheckSchema(Schema):
    selector = fields.String()
    wanted = fields.String()
    got = fields.String(allow_none=True)
    ok = fields.Boolean()


class CandidateSchema(Schema):
    name = fields.String()
    priority = fields.Integer()
    specificity = fields.Integer()
    matches = fields.Boolean()
    why = fields.String()
    checks = fields.List(fields.Nested(CheckSchema))


class MatchSchema(Schema):
    mac = fields.String()
    known_node = fields.String(allow_none=True, metadata={"description": "Its node id"})
    facts = fields.Dict()
    group = fields.String(allow_none=True, metadata={"description": "The winning group"})
    why = fields.String()
    workflow_id = fields.String(allow_none=True)
    workflow_source = fields.String(allow_none=True, metadata={"enum": ["node", "group", None]})
    variables = fields.Dict(keys=fields.String(), values=fields.String())
    auto_install = fields.Boolean(
        metadata={"description": "A first boot of this MAC would go straight to pending"}
    )
    candidates = fields.List(fields.Nested(CandidateSchema))


GroupEnvelope = envelope(GroupSchema, "GroupEnvelope")
GroupListEnvelope = list_envelope(GroupSchema, "GroupListEnvelope")
MatchEnvelope = envelope(MatchSchema, "GroupMatchEnvelope")

"""Schemas of node reports and the event log."""

import json
from typing import Any

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import validate
from marshmallow import validates

from provisioner.domain.events import ALL_TYPES
from provisioner.domain.events import REPORTED_TYPES
from provisioner.domain.events import EventStatus
from provisioner.domain.reports import LEGACY_STATUS
from provisioner.web.schemas.fields import MacAddress
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import text
from provisioner.web.schemas.nodes import HardwareFields

METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 5


def nesting_depth(value: Any) -> int:
    """How many levels of objects/arrays ``value`` has (a scalar has 0)."""
    if isinstance(value, dict):
        return 1 + max((nesting_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((nesting_depth(item) for item in value), default=0)
    return 0


PERCENT = validate.Range(min=0, max=100)


class ReportSchema(HardwareFields):
    """``POST /api/v1/report``: the node-facing contract. Unknown fields are ignored."""

    class Meta:
        unknown = EXCLUDE

    mac_address = MacAddress(required=True)
    event = fields.String(validate=validate.OneOf(REPORTED_TYPES), allow_none=True)
    status = fields.String(validate=validate.OneOf(list(EventStatus)), allow_none=True)
    message = text(4096, allow_none=True)
    progress = fields.Integer(validate=PERCENT, allow_none=True)
    event_metadata = fields.Dict(keys=fields.String(), allow_none=True)
    event_id = fields.String(validate=validate.Length(min=1, max=128), allow_none=True)
    installation_status = fields.String(
        validate=validate.OneOf(list(LEGACY_STATUS)), allow_none=True
    )
    installation_progress = fields.Integer(validate=PERCENT, allow_none=True)
    installation_error = text(4096, allow_none=True)

    @validates("event_metadata")
    def _bounded(self, value: dict[str, Any] | None, **kwargs: Any) -> None:
        if value is None:
            return
        if len(json.dumps(value)) > METADATA_MAX_BYTES:
            raise ValidationError(f"Must be at most {METADATA_MAX_BYTES} bytes as JSON.")
        if nesting_depth(value) > METADATA_MAX_DEPTH:
            raise ValidationError(f"Must be nested at most {METADATA_MAX_DEPTH} levels deep.")


class EventSchema(Schema):
    id = fields.Integer()
    node_id = fields.String()
    event_type = fields.String(metadata={"enum": ALL_TYPES})
    status = fields.String()
    message = fields.String(allow_none=True)
    progress = fields.Integer(allow_none=True)
    metadata = fields.Dict(attribute="metadata_", allow_none=True)
    ip_address = fields.String(allow_none=True)
    effect = fields.String(allow_none=True)
    event_id = fields.String(attribute="client_event_id", allow_none=True)
    created_at = fields.AwareDateTime()


class NodeEventsQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))
    event_type = fields.String(validate=validate.OneOf(ALL_TYPES))


class EventStreamQuerySchema(Schema):
    since = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=2**62),
        metadata={"description": "Cursor: the `next_cursor` of the previous page (0: start)"},
    )
    event_type = fields.String(validate=validate.OneOf(ALL_TYPES))
    node = fields.String(metadata={"description": "Node id or MAC address"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class EventStreamSchema(Schema):
    success = fields.Boolean(dump_default=True)
    data = fields.List(fields.Nested(EventSchema))
    next_cursor = fields.Integer()


EventListEnvelope = list_envelope(EventSchema, "EventListEnvelope")

"""marshmallow schemas for request and response bodies; request validation lives here."""

import json
import re
from typing import Any

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates

from provisioner.events import ALL_TYPES
from provisioner.events import LEGACY_STATUS
from provisioner.events import REPORTED_TYPES
from provisioner.events import EventStatus
from provisioner.lifecycle import State
from provisioner.macaddr import InvalidMac
from provisioner.macaddr import normalize_mac

HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
TAG = r"^[a-z0-9_-]{1,50}$"
WORKFLOW_ID = r"^[A-Za-z0-9._-]{1,64}$"
CONFIG_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
STATES = [state.value for state in State]


class MacAddress(fields.String):
    """A MAC address in any accepted form, loaded as ``aa:bb:cc:dd:ee:ff``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return normalize_mac(text)
        except InvalidMac as exc:
            raise ValidationError(str(exc)) from None


class IPAddress(fields.IP):
    """An IPv4 or IPv6 address, loaded as its canonical text."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs))


class Hostname(fields.String):
    """An RFC 1123 host name."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not HOSTNAME.match(text):
            raise ValidationError("Not a valid hostname (RFC 1123).")
        return text


def text(max_length: int, **kwargs: Any) -> fields.String:
    """A bounded free-text field."""
    return fields.String(validate=validate.Length(max=max_length), **kwargs)


# -- nodes --------------------------------------------------------------------------------


class HardwareFields(Schema):
    """Hardware and network facts a node or operator may supply."""

    hostname = Hostname(allow_none=True)
    ip_address = IPAddress(allow_none=True)
    vendor = text(255, allow_none=True)
    model = text(255, allow_none=True)
    serial_number = text(255, allow_none=True)
    system_uuid = text(36, allow_none=True)


class NodeCreateSchema(HardwareFields):
    mac_address = MacAddress(required=True)
    workflow_id = fields.String(validate=validate.Regexp(WORKFLOW_ID), allow_none=True)
    arch = text(32, allow_none=True)
    boot_mode = fields.String(validate=validate.OneOf(["bios", "uefi"]), allow_none=True)
    tags = fields.List(fields.String(validate=validate.Regexp(TAG)), load_default=list)


class NodeUpdateSchema(HardwareFields):
    workflow_id = fields.String(validate=validate.Regexp(WORKFLOW_ID), allow_none=True)
    arch = text(32, allow_none=True)
    boot_mode = fields.String(validate=validate.OneOf(["bios", "uefi"]), allow_none=True)


class LastEventSchema(Schema):
    type = fields.String()
    status = fields.String()
    at = fields.AwareDateTime()


class NodeSchema(Schema):
    id = fields.String()
    mac_address = fields.String()
    hostname = fields.String(allow_none=True)
    ip_address = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": STATES})
    workflow_id = fields.String(allow_none=True)
    vendor = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    serial_number = fields.String(allow_none=True)
    system_uuid = fields.String(allow_none=True)
    arch = fields.String(allow_none=True)
    boot_mode = fields.String(allow_none=True)
    install_attempts = fields.Integer()
    last_install_error = fields.String(allow_none=True)
    tags = fields.List(fields.String())
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    last_seen_at = fields.AwareDateTime(allow_none=True)
    state_changed_at = fields.AwareDateTime()
    progress = fields.Integer(allow_none=True)
    last_event = fields.Nested(LastEventSchema, allow_none=True)


class NodeListQuerySchema(Schema):
    state = fields.String(validate=validate.OneOf(STATES))
    tag = fields.String(validate=validate.Regexp(TAG))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10_000_000))


class StateChangeSchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf(STATES))
    comment = text(4096, allow_none=True)
    force = fields.Boolean(load_default=False)


class StateLogSchema(Schema):
    id = fields.Integer()
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    triggered_by = fields.String()
    comment = fields.String(allow_none=True)
    metadata = fields.Dict(attribute="metadata_", allow_none=True)
    created_at = fields.AwareDateTime()


class TagsSchema(Schema):
    tags = fields.List(
        fields.String(validate=validate.Regexp(TAG)),
        required=True,
        validate=validate.Length(min=1, max=50),
    )

    @validates("tags")
    def _unique(self, value: list[str], **kwargs: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("Tags must not repeat.")


# -- events -------------------------------------------------------------------------------

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


class StalledNodeSchema(NodeSchema):
    reason = fields.String(
        metadata={"enum": ["install_timeout", "install_silence", "no_first_boot"]}
    )
    stalled_since = fields.AwareDateTime()
    elapsed_seconds = fields.Float()
    timeouts = fields.Integer(metadata={"description": "Timeouts in this provisioning episode"})
    max_install_attempts = fields.Integer()


class StalledFeedSchema(Schema):
    success = fields.Boolean(dump_default=True)
    data = fields.List(fields.Nested(StalledNodeSchema))
    total = fields.Integer()
    generated_at = fields.AwareDateTime()
    timeout_minutes = fields.Float()


class StalledQuerySchema(Schema):
    limit = fields.Integer(load_default=1000, validate=validate.Range(min=1, max=10_000))


# -- workflows ----------------------------------------------------------------------------


class WorkflowSchema(Schema):
    """A workflow file's content (JSON or YAML)."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True, validate=validate.Regexp(WORKFLOW_ID))
    name = text(255, required=True)
    description = text(4096, load_default="")
    kernel_path = text(2048, required=True)
    initrd_path = text(2048, required=True)
    cmdline = text(4096, load_default="")
    architecture = text(32, load_default="x86_64")
    boot_mode = fields.String(load_default="any", validate=validate.OneOf(["bios", "uefi", "any"]))
    templates = fields.Dict(
        keys=fields.String(validate=validate.Regexp(CONFIG_NAME)),
        values=fields.String(validate=validate.Length(min=1, max=255)),
        load_default=dict,
        metadata={"description": "Install config name → template file (in WORKFLOWS_DIR)"},
    )


class WorkflowOutSchema(Schema):
    id = fields.String()
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    kernel_path = fields.String(allow_none=True)
    initrd_path = fields.String(allow_none=True)
    cmdline = fields.String(allow_none=True)
    architecture = fields.String(allow_none=True)
    boot_mode = fields.String(allow_none=True)
    templates = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    file = fields.String()
    valid = fields.Boolean()
    error = fields.String(allow_none=True)


# -- envelopes ----------------------------------------------------------------------------


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


NodeEnvelope = envelope(NodeSchema, "NodeEnvelope")
NodeListEnvelope = list_envelope(NodeSchema, "NodeListEnvelope")
StateLogListEnvelope = list_envelope(StateLogSchema, "StateLogListEnvelope")
WorkflowEnvelope = envelope(WorkflowOutSchema, "WorkflowEnvelope")
WorkflowListEnvelope = list_envelope(WorkflowOutSchema, "WorkflowListEnvelope")
EventListEnvelope = list_envelope(EventSchema, "EventListEnvelope")


class ReportTokenSchema(Schema):
    node_id = fields.String()
    token = fields.String()


ReportTokenEnvelope = envelope(ReportTokenSchema, "ReportTokenEnvelope")


class MessageSchema(Schema):
    success = fields.Boolean()
    message = fields.String()


class BootQuerySchema(Schema):
    """What iPXE sends to ``/api/v1/boot`` (``${net0/mac}``, ``${uuid}``, ...)."""

    class Meta:
        unknown = EXCLUDE

    mac = MacAddress(required=True)
    uuid = text(36)
    serial = text(255)
    vendor = text(255)
    model = text(255)
    hostname = Hostname()
    arch = text(32)
    platform = text(16)

    @pre_load
    def _drop_empty(self, data: Any, **kwargs: Any) -> Any:
        """iPXE sends ``uuid=`` when a setting is unknown: treat empty as absent."""
        return {key: value for key, value in data.items() if value != ""}

"""Schemas of the node inventory API, the stalled feed and the boot query."""

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import pre_load
from marshmallow import validate
from marshmallow import validates

from provisioner.web.schemas.fields import STATES
from provisioner.web.schemas.fields import TAG
from provisioner.web.schemas.fields import WORKFLOW_ID
from provisioner.web.schemas.fields import Hostname
from provisioner.web.schemas.fields import IPAddress
from provisioner.web.schemas.fields import MacAddress
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import tag_list
from provisioner.web.schemas.fields import text
from provisioner.web.schemas.power import PowerSettingsSchema


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
    tags = tag_list(load_default=list)


class NodeUpdateSchema(HardwareFields):
    workflow_id = fields.String(validate=validate.Regexp(WORKFLOW_ID), allow_none=True)
    arch = text(32, allow_none=True)
    boot_mode = fields.String(validate=validate.OneOf(["bios", "uefi"]), allow_none=True)
    # Power control (docs/power.md); the password is write-only.
    power = fields.Nested(PowerSettingsSchema)
    asset_tag = text(255, allow_none=True)
    boot_menu = fields.Boolean(
        allow_none=True,
        metadata={"description": "Console boot menu: true always, false never, null: tags"},
    )


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
    asset_tag = fields.String(allow_none=True)
    boot_menu = fields.Boolean(allow_none=True)
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
    # With a move to pending: boot from the network once and power-cycle (docs/power.md).
    power = fields.Boolean(allow_none=True)


class StateLogSchema(Schema):
    id = fields.Integer()
    from_state = fields.String(allow_none=True)
    to_state = fields.String()
    triggered_by = fields.String()
    comment = fields.String(allow_none=True)
    metadata = fields.Dict(attribute="metadata_", allow_none=True)
    created_at = fields.AwareDateTime()


class TagsSchema(Schema):
    tags = tag_list(required=True, min_length=1)

    @validates("tags")
    def _unique(self, value: list[str], **kwargs: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("Tags must not repeat.")


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


NodeEnvelope = envelope(NodeSchema, "NodeEnvelope")
NodeListEnvelope = list_envelope(NodeSchema, "NodeListEnvelope")
StateLogListEnvelope = list_envelope(StateLogSchema, "StateLogListEnvelope")


class ReportTokenSchema(Schema):
    node_id = fields.String()
    token = fields.String()


ReportTokenEnvelope = envelope(ReportTokenSchema, "ReportTokenEnvelope")


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
    asset = text(255)

    @pre_load
    def _drop_empty(self, data: Any, **kwargs: Any) -> Any:
        """iPXE sends ``uuid=`` when a setting is unknown: treat empty as absent."""
        return {key: value for key, value in data.items() if value != ""}


_BOOT_QUERY = BootQuerySchema()


def load_boot_query(args: Mapping[str, str]) -> dict[str, Any]:
    """What ``BootQuerySchema().load(args)`` returns, or raises, for a boot's query string.

    ``Schema.load`` runs each of the schema's nine fields, given or not, through its
    machinery: about 18 µs, a tenth of a boot, when iPXE sent only the MAC. Here the
    fields iPXE left out or sent empty are only checked for ``required``, and each given
    one is loaded by the schema's own field, so the rules and the messages are the
    schema's (``tests/unit/test_boot_query.py`` holds the two to the same answers).
    """
    loaded: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, field in _BOOT_QUERY.load_fields.items():
        value = args.get(name, "")
        if value == "":
            if field.required:
                errors[name] = [field.error_messages["required"]]
            continue
        try:
            loaded[name] = field.deserialize(value, name, args)
        except ValidationError as exc:
            errors[name] = exc.messages  # type: ignore[assignment]
    if errors:
        raise ValidationError(errors)
    return loaded

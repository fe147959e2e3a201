"""Schemas of workflow files and the workflows API."""

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import validate

from provisioner.web.schemas.fields import CONFIG_NAME
from provisioner.web.schemas.fields import WORKFLOW_ID
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope
from provisioner.web.schemas.fields import text


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


WorkflowEnvelope = envelope(WorkflowOutSchema, "WorkflowEnvelope")
WorkflowListEnvelope = list_envelope(WorkflowOutSchema, "WorkflowListEnvelope")

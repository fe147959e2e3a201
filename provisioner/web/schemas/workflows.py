"""Schemas of the workflows API (a workflow file's own: ``domain.validation``)."""

from marshmallow import Schema
from marshmallow import fields

from provisioner.domain.validation import WorkflowSchema as WorkflowSchema
from provisioner.web.schemas.fields import envelope
from provisioner.web.schemas.fields import list_envelope


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

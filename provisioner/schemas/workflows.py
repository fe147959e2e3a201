"""Schemas of workflow files and the workflows API."""

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate

from provisioner.domain.assets import AssetSpec
from provisioner.schemas.fields import CONFIG_NAME
from provisioner.schemas.fields import WORKFLOW_ID
from provisioner.schemas.fields import envelope
from provisioner.schemas.fields import list_envelope
from provisioner.schemas.fields import text


class AssetSchema(Schema):
    """One entry of a workflow's ``assets:`` list (``provisioner.domain.assets``)."""

    path = fields.String(
        required=True,
        validate=[validate.Length(max=1024), validate.Regexp(r"^[^./\\][^\\\x00]*$")],
        metadata={"description": "Where the file goes, relative to ASSETS_DIR"},
    )
    url = fields.String(load_default="", validate=validate.Regexp(r"^(https?://\S+)?$"))
    checksum = fields.String(
        load_default="",
        validate=validate.Regexp(r"^(sha256:[0-9a-fA-F]{64}|https?://\S+)?$"),
        metadata={"description": "sha256:<64 hex digits>, or the URL of a SHA256SUMS file"},
    )

    @post_load
    def make_spec(self, data: dict, **kwargs: object) -> AssetSpec:
        return AssetSpec(**data)


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
    assets = fields.List(
        fields.Nested(AssetSchema),
        load_default=list,
        metadata={"description": "Files for ASSETS_DIR: path, upstream url, checksum"},
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

"""What a valid name and a valid workflow file are: the patterns and the workflow file's
schema, shared by the rules (``workflows``, ``inventory``) and the HTTP schemas above them."""

from typing import Any

from marshmallow import EXCLUDE
from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate

from provisioner.domain.assets import AssetSpec

MAX_TAGS = 50  # tags one node may carry: the create and tags endpoints share this cap
WORKFLOW_ID = r"^[A-Za-z0-9._-]{1,64}\Z"
CONFIG_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"


def no_nul(value: str) -> None:
    """Refuse a NUL character: PostgreSQL cannot store one in text (a query string can
    carry it as ``%00``; JSON bodies are checked as they are parsed)."""
    if "\x00" in value:
        raise ValidationError("NUL characters are not allowed.")


def text(max_length: int, **kwargs: Any) -> fields.String:
    """A bounded free-text field."""
    return fields.String(validate=[validate.Length(max=max_length), no_nul], **kwargs)


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

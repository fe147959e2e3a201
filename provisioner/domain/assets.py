"""Which files of ``ASSETS_DIR`` a workflow uses, and where their upstream copies are.

A workflow names a served file by a path without a scheme (``debian-12/linux``, also
written ``${assets}/debian-12/linux``) in ``kernel_path`` or ``initrd_path``, and may list
in ``assets:`` the files ``provisioner assets fetch`` downloads::

    assets:
      - path: debian-12/linux                      # below ASSETS_DIR
        url: https://deb.debian.org/.../linux      # the upstream copy
        checksum: sha256:3f2a...                   # or the URL of a SHA256SUMS file
"""

import re
from dataclasses import dataclass
from typing import Any

SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})\Z")
#: ``${assets}`` (with or without a slash after it) at the start of a path.
ASSETS_PREFIX = re.compile(r"^\$\{assets\}/*")


@dataclass(frozen=True)
class AssetSpec:
    """One file a workflow needs in ``ASSETS_DIR``: where to get it and how to check it."""

    path: str
    url: str = ""
    checksum: str = ""

    @property
    def digest(self) -> str | None:
        """The SHA-256 hex digest the checksum gives outright, else ``None``."""
        match = SHA256.match(self.checksum)
        return match.group(1).lower() if match else None

    @property
    def sums_url(self) -> str | None:
        """The URL of the SHA256SUMS file to look the digest up in, else ``None``."""
        return self.checksum if self.checksum.startswith(("http://", "https://")) else None


def asset_path(template: str) -> str | None:
    """The ``ASSETS_DIR`` path a kernel/initrd value names, or ``None`` for a URL (or a
    value that differs per node)."""
    value = ASSETS_PREFIX.sub("", template)
    if "://" in value or "${" in value:
        return None
    return value.lstrip("/") or None


def workflow_assets(workflow: Any) -> list[AssetSpec]:
    """Every asset the workflow names: its ``assets:`` list, then a kernel or initrd path
    not in the list (with no upstream and no checksum)."""
    specs = list(workflow.assets)
    listed = {spec.path for spec in specs}
    for name in ("kernel_path", "initrd_path"):
        path = asset_path(getattr(workflow, name))
        if path is not None and path not in listed:
            specs.append(AssetSpec(path))
            listed.add(path)
    return specs


def asset_role(workflow: Any, path: str) -> str:
    """What a served file is to the workflow: ``kernel``, ``initrd`` or ``asset``."""
    for role in ("kernel", "initrd"):
        if asset_path(getattr(workflow, f"{role}_path")) == path:
            return role
    return "asset"

"""One way to write a workflow file in a test (the YAML was copied into a dozen modules)."""

from pathlib import Path

import yaml


def workflow_text(workflow_id: str, **fields: object) -> str:
    """A workflow file's YAML text (see ``write_test_workflow`` for the defaults)."""
    document = {
        "id": workflow_id,
        "name": f"{workflow_id} (test)",
        "kernel_path": f"${{server}}/files/{workflow_id}/vmlinuz",
        "initrd_path": f"${{server}}/files/{workflow_id}/initrd.img",
        "cmdline": "console=ttyS0 node=${node_id}",
    } | fields
    content = {key: value for key, value in document.items() if value is not None}
    return yaml.safe_dump(content, sort_keys=False)


def write_test_workflow(directory: Path, workflow_id: str, **fields: object) -> Path:
    """Write ``<directory>/<workflow_id>.yaml`` and return its path.

    By default the workflow boots ``${server}/files/<id>/vmlinuz`` and ``initrd.img`` with
    ``console=ttyS0 node=${node_id}``; ``fields`` replace those or add others (``templates``,
    ``boot_mode``, ``description`` ...). A field given as ``None`` is left out.
    """
    path = Path(directory) / f"{workflow_id}.yaml"
    path.write_text(workflow_text(workflow_id, **fields))
    return path

"""The install-config sandbox on its own: every template that tries to reach past its
variables (Python internals, Flask's globals, files outside the workflows directory) fails
to render, naming the template and printing nothing it reached. Served through the API:
tests/api/test_install_configs.py."""

from pathlib import Path

import pytest
from templatecases import ESCAPING_PATHS
from templatecases import HOSTILE_TEMPLATES
from templatecases import SECRET

from provisioner.domain.install_configs import environment
from provisioner.domain.install_configs import render_config
from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowError
from provisioner.domain.workflows import sample_variables

TEMPLATES = (
    {name: f"cfg-os/{name}.j2" for name in HOSTILE_TEMPLATES}
    | ESCAPING_PATHS
    | {"symlink-out": "cfg-os/link.j2", "partial": "cfg-os/partial.j2"}
)
WORKFLOW = Workflow(
    id="cfg-os",
    name="Config OS",
    kernel_path="http://mirror.example/vmlinuz",
    initrd_path="http://mirror.example/initrd.gz",
    file="cfg-os.yaml",
    templates=TEMPLATES,
)


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    """A workflows directory holding the hostile templates, a secret file beside it."""
    (tmp_path / "secret.txt").write_text(SECRET)
    directory = tmp_path / "workflows" / "cfg-os"
    directory.mkdir(parents=True)
    for name, source in HOSTILE_TEMPLATES.items():
        (directory / f"{name}.j2").write_text(source)
    (directory / "link.j2").symlink_to(tmp_path / "secret.txt")
    (directory / "partial.j2").write_text("mac={{ mac }}\n")
    return directory.parent


def test_a_plain_template_renders_from_the_same_environment(workflows):
    rendered = render_config(environment(workflows), WORKFLOW, "partial", sample_variables())
    assert rendered == "mac=52:54:00:00:00:01\n"


@pytest.mark.parametrize("name", [*HOSTILE_TEMPLATES, *ESCAPING_PATHS, "symlink-out"])
def test_the_sandbox_refuses_attribute_and_file_access(workflows, name):
    with pytest.raises(WorkflowError) as info:
        render_config(environment(workflows), WORKFLOW, name, sample_variables())

    message = str(info.value)
    assert TEMPLATES[name] in message
    assert SECRET not in message
    assert "root:" not in message  # /etc/passwd
    assert "<class" not in message


@pytest.mark.parametrize("name", ["attr-class", "attr-filter", "method-self", "cycler-init"])
def test_attribute_access_is_refused_as_unsafe(workflows, name):
    with pytest.raises(WorkflowError, match="unsafe"):
        render_config(environment(workflows), WORKFLOW, name, sample_variables())

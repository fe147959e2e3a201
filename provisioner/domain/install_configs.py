"""Rendered install configs: kickstart, cloud-init user-data/meta-data, preseed, per node.

A workflow names its templates (``templates: {ks.cfg: rocky-9/ks.cfg.j2}``), files inside
``WORKFLOWS_DIR``. They are rendered with Jinja2's sandbox and ``StrictUndefined``: a
template sees only the variables given (no file access beyond the workflows directory, no
attribute tricks), and a misspelt variable is an error, never an empty string. What a
template prints is escaped as ``provisioner.domain.escaping`` says: inert by default, exact through
the ``sh``, ``ks``, ``yaml`` and ``preseed`` filters.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader
from jinja2 import StrictUndefined
from jinja2 import TemplateError
from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment

from provisioner.domain.escaping import FILTERS
from provisioner.domain.escaping import Escaped
from provisioner.domain.escaping import guard
from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowError
from provisioner.domain.workflows import sample_variables


class ConfigNotFound(WorkflowError):
    """The workflow has no install config of that name."""


class ConfinedLoader(FileSystemLoader):
    """A ``FileSystemLoader`` that also refuses symlinks leading out of its directory."""

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
        source, filename, uptodate = super().get_source(environment, template)
        root = Path(self.searchpath[0]).resolve()
        if not Path(filename).resolve().is_relative_to(root):
            raise TemplateNotFound(template)
        return source, filename, uptodate


def environment(directory: Path) -> ImmutableSandboxedEnvironment:
    """A sandboxed Jinja2 environment that loads templates from the workflows directory."""
    env = ImmutableSandboxedEnvironment(
        loader=ConfinedLoader(str(directory)),
        undefined=StrictUndefined,
        autoescape=False,
        finalize=guard,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters.update(FILTERS)
    return env


def render_config(
    env: ImmutableSandboxedEnvironment,
    workflow: Workflow,
    name: str,
    variables: Mapping[str, str],
) -> str:
    """Render the workflow's install config ``name`` for one node (plus ``workflow_id`` and
    ``workflow_name``)."""
    template_path = workflow.templates.get(name)
    if template_path is None:
        known = ", ".join(sorted(workflow.templates)) or "none"
        raise ConfigNotFound(f"workflow {workflow.id} has no config {name!r} (has: {known})")
    # The workflow's own id and name come from the file that names the template: whoever
    # writes one writes the other, so they print as written.
    trusted = {"workflow_id": Escaped(workflow.id), "workflow_name": Escaped(workflow.name)}
    try:
        return env.get_template(template_path).render({**variables, **trusted})
    except TemplateError as exc:
        raise WorkflowError(f"{template_path}: {exc.message or exc}") from None


def check_configs(env: ImmutableSandboxedEnvironment, workflow: Workflow) -> list[str]:
    """Problems that would stop any of the workflow's configs from rendering."""
    variables = sample_variables()
    problems = []
    for name in sorted(workflow.templates):
        try:
            render_config(env, workflow, name, variables)
        except WorkflowError as exc:
            problems.append(f"templates.{name}: {exc}")
    return problems

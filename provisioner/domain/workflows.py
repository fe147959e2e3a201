"""Workflow files: finding and loading them, and rendering their ``${variables}``.

A workflow is one file in ``WORKFLOWS_DIR`` named after its id (``<id>.json``, ``.yaml`` or
``.yml``). Files are parsed once and cached until their modification time or size changes,
so the boot path never re-reads an unchanged file.
"""

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from provisioner.domain.assets import AssetSpec
from provisioner.domain.escaping import inert
from provisioner.domain.validation import WORKFLOW_ID
from provisioner.domain.validation import WorkflowSchema

SUFFIXES = (".json", ".yaml", ".yml")
VARIABLES = ("server", "assets", "node_id", "mac", "ip", "hostname", "report_url", "report_token")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_ID = re.compile(WORKFLOW_ID)


class WorkflowError(Exception):
    """A workflow cannot be found, parsed or rendered; the message says why."""


class WorkflowNotFound(WorkflowError):
    """No file for that workflow id."""


@dataclass(frozen=True)
class Workflow:
    """A parsed, validated workflow file."""

    id: str
    name: str
    kernel_path: str
    initrd_path: str
    file: str
    description: str = ""
    cmdline: str = ""
    architecture: str = "x86_64"
    boot_mode: str = "any"
    templates: dict[str, str] = field(default_factory=dict)
    assets: list[AssetSpec] = field(default_factory=list)


@dataclass(frozen=True)
class WorkflowEntry:
    """A workflow file as listed: the workflow, or the error that stops it from loading."""

    id: str
    file: str
    workflow: Workflow | None = None
    error: str | None = None


@dataclass(frozen=True)
class BootFiles:
    """What iPXE needs to start an installer."""

    kernel_url: str
    initrd_url: str
    cmdline: str


def render(template: str, variables: Mapping[str, str]) -> str:
    """Replace every ``${name}``; an unknown name is an error, never left as a literal.

    A value is reduced to plain characters (``escaping.inert``): on an iPXE ``kernel`` line
    a space would add a kernel argument, a newline an iPXE command, ``${`` an expansion.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            known = ", ".join(sorted(variables))
            raise WorkflowError(f"unknown variable ${{{name}}} (known: {known})")
        return inert(variables[name])

    return _VARIABLE.sub(substitute, template)


def resolve_url(path: str, assets: str) -> str:
    """A kernel/initrd path is a URL, or a file in ``ASSETS_DIR`` served at ``assets``."""
    if re.match(r"^(https?|tftp)://", path):
        return path
    return f"{assets.rstrip('/')}/{path.lstrip('/')}"


def boot_files(workflow: Workflow, variables: Mapping[str, str]) -> BootFiles:
    """Render the workflow's kernel, initrd and command line for one node."""
    assets = variables.get("assets") or f"{variables['server'].rstrip('/')}/assets"
    return BootFiles(
        kernel_url=resolve_url(render(workflow.kernel_path, variables), assets),
        initrd_url=resolve_url(render(workflow.initrd_path, variables), assets),
        cmdline=render(workflow.cmdline, variables),
    )


def sample_variables() -> dict[str, str]:
    """Stand-in values used when checking that a workflow renders."""
    return {
        "server": "http://provisioner.example:8080",
        "assets": "http://provisioner.example:8080/assets",
        "node_id": "00000000-0000-4000-8000-000000000000",
        "mac": "52:54:00:00:00:01",
        "ip": "192.0.2.10",
        "hostname": "node-1",
        "report_url": "http://provisioner.example:8080/api/v1/report",
        "report_token": "sample-report-token",
    }


def parse_file(path: Path) -> Workflow:
    """Parse and validate one workflow file."""
    try:
        raw_text = path.read_text(encoding="utf-8")
        data = json.loads(raw_text) if path.suffix == ".json" else yaml.safe_load(raw_text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise WorkflowError(f"{path.name}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise WorkflowError(f"{path.name}: expected a mapping of fields")
    try:
        fields: dict[str, Any] = WorkflowSchema().load(data)
    except ValidationError as exc:
        problems = "; ".join(f"{key}: {' '.join(msgs)}" for key, msgs in exc.messages.items())
        raise WorkflowError(f"{path.name}: {problems}") from None
    if fields["id"] != path.stem:
        raise WorkflowError(f"{path.name}: id {fields['id']!r} does not match the file name")
    return Workflow(file=path.name, **fields)


def check(workflow: Workflow) -> list[str]:
    """Problems that would stop the workflow from rendering for a node."""
    problems = []
    for name in ("kernel_path", "initrd_path", "cmdline"):
        try:
            render(getattr(workflow, name), sample_variables())
        except WorkflowError as exc:
            problems.append(f"{name}: {exc}")
    return problems


#: Variables whose value differs per node: a path using one cannot be checked beforehand.
PER_NODE_VARIABLES = frozenset(VARIABLES) - {"server", "assets"}
#: How long ``workflows check`` waits for a kernel or initrd URL to answer ``HEAD``.
HEAD_TIMEOUT_SECONDS = 10


@dataclass
class SourceReport:
    """What checking a workflow's kernel and initrd found: problems fail the check."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_sources(
    workflow: Workflow, *, directory: Path, server_url: str, offline: bool
) -> SourceReport:
    """Check that the kernel and initrd can be had: a URL answers ``HEAD`` with 200, a path
    (``${assets}/...``, or any path without a scheme) exists in ``directory``, the assets
    directory. Whether the file matches its checksum is ``provisioner.assets.verify``'s."""
    report = SourceReport()
    for name in ("kernel_path", "initrd_path"):
        template = getattr(workflow, name)
        used = set(_VARIABLE.findall(template))
        if used & PER_NODE_VARIABLES:
            report.notes.append(f"{name}: not checked: it differs per node")
            continue
        if "server" in used and not server_url:
            report.notes.append(f"{name}: not checked: set SERVER_URL to check ${{server}} URLs")
            continue
        try:
            value = render(template, {"server": server_url.rstrip("/"), "assets": ""})
        except WorkflowError:
            continue  # check() reports it
        _check_source(report, name, value, directory, offline)
    return report


def _check_source(
    report: SourceReport, name: str, value: str, directory: Path, offline: bool
) -> None:
    if value.startswith("tftp://"):
        report.notes.append(f"{name}: not checked: TFTP")
    elif re.match(r"^https?://", value):
        if offline:
            report.notes.append(f"{name}: not checked (--offline)")
        elif problem := head_problem(value):
            report.problems.append(f"{name}: {problem}")
    else:
        path = directory / value.lstrip("/")
        if not path.is_file():
            report.problems.append(
                f"{name}: {value.lstrip('/')}: no such file in ASSETS_DIR ({path}); "
                "'provisioner assets fetch' downloads a workflow's assets"
            )


def head_problem(url: str, timeout: float = HEAD_TIMEOUT_SECONDS) -> str | None:
    """Why ``HEAD url`` (redirects followed) does not answer 200, or ``None`` when it does."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"HEAD {url} failed: {reason}"
    return None if status == 200 else f"HEAD {url} answered {status}, not 200"


@dataclass
class WorkflowStore:
    """The workflows directory, with parsed files cached by (mtime, size)."""

    directory: Path
    _cache: dict[Path, tuple[tuple[int, int], Workflow | WorkflowError]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def path_for(self, workflow_id: str) -> Path:
        """The file holding ``workflow_id``; the id can never name a path outside the dir."""
        if not _ID.match(workflow_id) or workflow_id in {".", ".."}:
            raise WorkflowNotFound(f"invalid workflow id {workflow_id[:80]!r}")
        for suffix in SUFFIXES:
            path = self.directory / f"{workflow_id}{suffix}"
            if path.is_file() and path.resolve().parent == self.directory.resolve():
                return path
        raise WorkflowNotFound(f"workflow {workflow_id!r} not found in {self.directory}")

    def exists(self, workflow_id: str) -> bool:
        """Tell whether a file for ``workflow_id`` exists (valid or not)."""
        try:
            self.path_for(workflow_id)
        except WorkflowNotFound:
            return False
        return True

    def load(self, workflow_id: str) -> Workflow:
        """Return the workflow, from cache unless its file changed."""
        return self._load_path(self.path_for(workflow_id))

    def _load_path(self, path: Path) -> Workflow:
        try:
            stat = path.stat()
        except OSError as exc:
            raise WorkflowNotFound(f"{path.name}: {exc.strerror}") from None
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != key:
            try:
                value: Workflow | WorkflowError = parse_file(path)
            except WorkflowError as exc:
                value = exc
            with self._lock:
                self._cache[path] = (key, value)
            cached = (key, value)
        if isinstance(cached[1], WorkflowError):
            raise cached[1]
        return cached[1]

    def entries(self) -> list[WorkflowEntry]:
        """Every workflow file in the directory, loaded or with its error."""
        if not self.directory.is_dir():
            return []
        result = []
        for path in sorted(self.directory.iterdir()):
            if path.suffix not in SUFFIXES or not path.is_file():
                continue
            try:
                result.append(WorkflowEntry(path.stem, path.name, workflow=self._load_path(path)))
            except WorkflowError as exc:
                result.append(WorkflowEntry(path.stem, path.name, error=str(exc)))
        return result

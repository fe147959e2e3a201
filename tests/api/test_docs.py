"""docs/installers.md shows the repository's own files, so its examples cannot drift.

A fenced block right below ``<!-- file: PATH -->`` must be PATH byte for byte; below
``<!-- excerpt: PATH -->``, whole consecutive lines of it. The files are the ones the install
config tests fetch and check. ``<!-- check: report-body -->`` marks a report body that must
pass the report schema, and every ``/api/v1/...`` path the page names must be a real route.
"""

import json
import re
import shutil
import subprocess
from typing import NamedTuple

import pytest
from paths import REPO_ROOT

from provisioner import create_app
from provisioner.web.schemas import ReportSchema

ROOT = REPO_ROOT
DOC = ROOT / "docs" / "installers.md"
MARKER = re.compile(r"^<!-- (file|excerpt|check): (\S+) -->$")
#: Text that only an installer config or a DHCP config holds: such a block must be marked.
CONFIG_SIGNS = ("%pre", "%post", "autoinstall:", "d-i ", "dhcp-boot=", "[Unit]", "templates:")
#: Example files the page must show (or, for the trivial ones, name).
EXAMPLES = sorted(
    [
        *(ROOT / "examples" / "workflows").glob("*.yaml"),
        *(ROOT / "examples" / "workflows").glob("*/*.j2"),
        *(ROOT / "examples" / "dnsmasq").glob("*.conf"),
    ]
)


class Block(NamedTuple):
    """A fenced block: its marker (kind and target, or ``None``), text and first line."""

    kind: str | None
    target: str | None
    text: str
    line: int


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block, with the marker on the line just above its opening fence."""
    lines = markdown.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        marker = MARKER.match(lines[index - 1]) if index else None
        end = lines.index("```", index + 1)
        text = "".join(line + "\n" for line in lines[index + 1 : end])
        kind, target = marker.groups() if marker else (None, None)
        blocks.append(Block(kind, target, text, index + 2))
        index = end + 1
    return blocks


DOC_TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = fenced_blocks(DOC_TEXT)
FILE_BLOCKS = [block for block in BLOCKS if block.kind in ("file", "excerpt")]


def block_id(block: Block) -> str:
    return f"{block.kind}:{block.target}@{block.line}"


def test_every_marker_sits_right_above_a_fenced_block():
    """A marker anywhere else would check nothing."""
    lines = DOC_TEXT.splitlines()
    markers = [number for number, line in enumerate(lines) if line.startswith("<!-- ")]

    assert markers
    for number in markers:
        assert MARKER.match(lines[number]), f"line {number + 1}: malformed marker {lines[number]}"
        assert lines[number + 1].startswith("```"), f"line {number + 1}: no block below"


@pytest.mark.parametrize("block", FILE_BLOCKS, ids=block_id)
def test_marked_block_is_the_file_or_a_verbatim_excerpt(block):
    path = ROOT / block.target
    assert path.is_file(), f"{block.target} (docs line {block.line}) does not exist"
    source = path.read_text(encoding="utf-8")

    if block.kind == "file":
        assert block.text == source, f"docs line {block.line} differs from {block.target}"
    else:
        assert block.text.strip(), "empty excerpt"
        assert ("\n" + block.text) in ("\n" + source), (
            f"docs line {block.line} is not whole consecutive lines of {block.target}"
        )


def test_the_installer_configs_are_all_shown():
    """Each workflow, template and DHCP example is a marked block, or at least named."""
    targets = {block.target for block in FILE_BLOCKS}

    for path in EXAMPLES:
        relative = str(path.relative_to(ROOT))
        assert relative in targets or path.name in DOC_TEXT, f"{relative} is not in the docs"
    shown = {str(path.relative_to(ROOT)) for path in EXAMPLES} & targets
    assert len(shown) >= 9


def test_no_unmarked_block_holds_a_copy_of_an_installer_config():
    """Configs are only ever shown from their files, never typed in a second time."""
    for block in BLOCKS:
        if block.kind is None:
            found = [sign for sign in CONFIG_SIGNS if sign in block.text]
            assert not found, f"docs line {block.line}: unmarked block with {found}"


def test_the_report_body_example_passes_the_report_schema():
    bodies = [block for block in BLOCKS if (block.kind, block.target) == ("check", "report-body")]

    assert bodies
    for block in bodies:
        loaded = ReportSchema().load(json.loads(block.text))
        assert loaded["event"] and loaded["event_id"]


def test_example_paths_named_in_the_docs_exist():
    for name in set(re.findall(r"\b(?:examples|tests|docs)/[\w./-]*\w", DOC_TEXT)):
        assert (ROOT / name).exists(), name


def api_paths(markdown: str) -> set[str]:
    """The ``/api/v1/...`` paths the page names, placeholders replaced by a sample value."""
    found = re.findall(r"/api/v1/(?:<[^>]*>|\{\{[^}]*\}\}|\$\{[^}]*\}|[^\s`'\"?<>)\\])*", markdown)
    paths = set()
    for path in found:
        path = re.sub(r"<[^>]*>|\{\{[^}]*\}\}|\$\{[^}]*\}", "x", path).rstrip(".,;:")
        paths.add(path + "x" if path.endswith("/") else path)  # a seed directory: its files
    return paths


def test_every_api_path_in_the_docs_is_a_route(tmp_path):
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'docs.db'}"})
    routes = app.url_map.bind("provisioner.test")
    paths = api_paths(DOC_TEXT)

    assert {"/api/v1/report", "/api/v1/report.sh", "/api/v1/ipxe/boot.ipxe"} <= paths
    for path in sorted(paths):
        methods = ("GET", "POST", "PATCH")
        assert any(routes.test(path, method) for method in methods), f"{path} is not a route"


def test_the_dnsmasq_example_passes_dnsmasqs_own_check():
    """``dnsmasq --test`` (skipped where dnsmasq is not installed)."""
    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        pytest.skip("dnsmasq is not installed (Debian: dnsmasq-base)")
    config = ROOT / "examples" / "dnsmasq" / "provisioner.conf"

    result = subprocess.run(
        [dnsmasq, "--test", "-C", str(config)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr + result.stdout

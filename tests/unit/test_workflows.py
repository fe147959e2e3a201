"""Workflow files: loading, caching, id safety, rendering, the check command and the API."""

import json
import os
from pathlib import Path

import pytest
from paths import EXAMPLE_WORKFLOWS

from provisioner.domain.workflows import Workflow
from provisioner.domain.workflows import WorkflowError
from provisioner.domain.workflows import WorkflowNotFound
from provisioner.domain.workflows import WorkflowStore
from provisioner.domain.workflows import boot_files
from provisioner.domain.workflows import check
from provisioner.domain.workflows import render
from provisioner.domain.workflows import sample_variables

FIELDS = {
    "name": "Demo",
    "description": "a demo",
    "kernel_path": "http://mirror.example/vmlinuz",
    "initrd_path": "/files/initrd.img",
    "cmdline": "ip=dhcp url=${server}/seed/${node_id}",
}


def yaml_text(workflow_id: str, **overrides: str) -> str:
    """A workflow file's YAML text."""
    fields = {"id": workflow_id, **FIELDS, **overrides}
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in fields.items())


@pytest.fixture
def store(tmp_path: Path) -> WorkflowStore:
    """An empty workflows directory."""
    directory = tmp_path / "wf"
    directory.mkdir()
    return WorkflowStore(directory)


# -- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_loads_json_yaml_and_yml(store, suffix):
    """A workflow file in any of the three formats loads with its fields."""
    path = store.directory / f"demo{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"id": "demo", **FIELDS}))
    else:
        path.write_text(yaml_text("demo"))
    workflow = store.load("demo")
    assert workflow.id == "demo"
    assert workflow.name == "Demo"
    assert workflow.description == "a demo"
    assert workflow.kernel_path == FIELDS["kernel_path"]
    assert workflow.cmdline == FIELDS["cmdline"]
    assert workflow.file == path.name


def test_optional_fields_have_defaults(store):
    """architecture, boot_mode, description and cmdline may be left out."""
    (store.directory / "min.yaml").write_text(
        "id: min\nname: Minimal\nkernel_path: /k\ninitrd_path: /i\n"
    )
    workflow = store.load("min")
    assert (workflow.architecture, workflow.boot_mode) == ("x86_64", "any")
    assert (workflow.description, workflow.cmdline) == ("", "")


def test_other_files_are_not_workflows(store):
    """Only ``.json``, ``.yaml`` and ``.yml`` files are listed."""
    (store.directory / "demo.yaml").write_text(yaml_text("demo"))
    (store.directory / "notes.txt").write_text("hello")
    (store.directory / "demo.yaml.bak").write_text(yaml_text("demo"))
    (store.directory / "sub.yaml").mkdir()
    assert [entry.id for entry in store.entries()] == ["demo"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id: demo\nname: Demo\n", "kernel_path"),
        ("- just\n- a list\n", "mapping"),
        ("id: demo\nname: [oops\n", "parse"),
        (yaml_text("demo", boot_mode="floppy"), "boot_mode"),
        (yaml_text("other"), "does not match"),
    ],
    ids=["missing-field", "not-a-mapping", "bad-yaml", "bad-value", "id-mismatch"],
)
def test_broken_file_raises_workflow_error(store, content, message):
    """A file that cannot be used raises ``WorkflowError`` saying why."""
    (store.directory / "demo.yaml").write_text(content)
    with pytest.raises(WorkflowError, match=message):
        store.load("demo")
    (entry,) = store.entries()
    assert entry.workflow is None
    assert message in entry.error


def test_id_must_match_file_name(store):
    """A file whose ``id`` differs from its name is refused under either id."""
    (store.directory / "alpha.yaml").write_text(yaml_text("beta"))
    with pytest.raises(WorkflowError, match="does not match"):
        store.load("alpha")
    with pytest.raises(WorkflowNotFound):
        store.load("beta")


def test_missing_workflow_is_not_found(store):
    """An id with no file raises ``WorkflowNotFound``."""
    with pytest.raises(WorkflowNotFound):
        store.load("nothing")
    assert not store.exists("nothing")


def test_missing_directory_lists_nothing(tmp_path):
    """A workflows directory that does not exist is simply empty."""
    assert WorkflowStore(tmp_path / "absent").entries() == []


# -- caching ------------------------------------------------------------------------------


def rewrite_keeping_stat(path: Path, text: str) -> None:
    """Replace the file's content but restore its modification time."""
    before = path.stat()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_unchanged_file_is_served_from_cache(store):
    """Same mtime and size: the parsed workflow is reused, not re-read."""
    path = store.directory / "demo.yaml"
    path.write_text(yaml_text("demo", name="First"))
    first = store.load("demo")
    rewrite_keeping_stat(path, yaml_text("demo", name="Other"))
    again = store.load("demo")
    assert again is first
    assert again.name == "First"


def test_changed_mtime_reloads(store):
    """A newer modification time makes the store parse the file again."""
    path = store.directory / "demo.yaml"
    path.write_text(yaml_text("demo", name="First"))
    store.load("demo")
    before = path.stat()
    path.write_text(yaml_text("demo", name="Newer"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert store.load("demo").name == "Newer"


def test_changed_size_reloads_even_with_the_same_mtime(store):
    """A different size alone is enough to parse the file again."""
    path = store.directory / "demo.yaml"
    path.write_text(yaml_text("demo", name="First"))
    store.load("demo")
    rewrite_keeping_stat(path, yaml_text("demo", name="A longer name"))
    assert store.load("demo").name == "A longer name"


def test_fixed_file_recovers_from_a_cached_error(store):
    """A broken file that is repaired loads on the next call."""
    path = store.directory / "demo.yaml"
    path.write_text("id: demo\n")
    with pytest.raises(WorkflowError):
        store.load("demo")
    before = path.stat()
    path.write_text(yaml_text("demo"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert store.load("demo").name == "Demo"


def test_deleted_file_is_not_served_from_cache(store):
    """Once the file is gone, the cached workflow is not returned."""
    path = store.directory / "demo.yaml"
    path.write_text(yaml_text("demo"))
    store.load("demo")
    path.unlink()
    with pytest.raises(WorkflowNotFound):
        store.load("demo")


# -- ids can never escape -----------------------------------------------------------------


@pytest.mark.parametrize(
    "workflow_id",
    ["../x", "..", ".", "a/b", "/x", "..\\x", "x/../x", "", "x" * 65, "x\x00"],
)
def test_path_escaping_ids_never_resolve(store, workflow_id):
    """Ids with separators, dot-dot or odd characters name no file, even if one exists there."""
    (store.directory.parent / "x.yaml").write_text(yaml_text("x"))
    (store.directory / "x.yaml").write_text(yaml_text("x"))
    sub = store.directory / "a"
    sub.mkdir()
    (sub / "b.yaml").write_text(yaml_text("b"))
    with pytest.raises(WorkflowNotFound):
        store.path_for(workflow_id)
    with pytest.raises(WorkflowNotFound):
        store.load(workflow_id)
    assert not store.exists(workflow_id)


def test_symlink_out_of_the_directory_is_not_followed(store):
    """A link named like a workflow that points outside the directory is ignored."""
    outside = store.directory.parent / "secret.yaml"
    outside.write_text(yaml_text("evil"))
    (store.directory / "evil.yaml").symlink_to(outside)
    with pytest.raises(WorkflowNotFound):
        store.load("evil")


# -- rendering ----------------------------------------------------------------------------


def test_render_replaces_every_known_variable():
    """``${server}``, ``${node_id}``, ``${mac}``, ``${ip}`` and ``${hostname}`` are filled in."""
    values = sample_variables()
    template = "s=${server} n=${node_id} m=${mac} i=${ip} h=${hostname}"
    expected = (
        f"s={values['server']} n={values['node_id']} m={values['mac']} "
        f"i={values['ip']} h={values['hostname']}"
    )
    assert render(template, values) == expected


@pytest.mark.parametrize("template", ["${nope}", "a ${server} b ${Server}", "${}", "${ mac }"])
def test_unknown_variable_is_an_error(template):
    """An unknown ``${name}`` raises instead of staying in the text."""
    with pytest.raises(WorkflowError, match="unknown variable"):
        render(template, sample_variables())


def test_rendered_values_are_not_expanded_again():
    """A value that itself looks like ``${...}`` is not expanded, nor kept for iPXE to expand."""
    values = sample_variables() | {"hostname": "${mac}"}
    assert render("h=${hostname}", values) == "h=__mac_"


def test_boot_files_resolve_server_paths():
    """A path names a file of ASSETS_DIR, served at ``/assets/``; a full URL is kept."""
    fields = {"id": "demo", **FIELDS, "kernel_path": "${server}/k/vmlinuz"}
    workflow = Workflow(file="demo.yaml", **fields)
    files = boot_files(workflow, sample_variables() | {"node_id": "n-1"})
    assert files.kernel_url == "http://provisioner.example:8080/k/vmlinuz"
    assert files.initrd_url == "http://provisioner.example:8080/assets/files/initrd.img"
    assert files.cmdline == "ip=dhcp url=http://provisioner.example:8080/seed/n-1"


def test_check_reports_unknown_variables(store):
    """``check`` lists each field that would not render."""
    (store.directory / "demo.yaml").write_text(yaml_text("demo", cmdline="x=${bogus}"))
    problems = check(store.load("demo"))
    assert len(problems) == 1
    assert "cmdline" in problems[0] and "bogus" in problems[0]


# -- examples -----------------------------------------------------------------------------


def test_example_workflows_load_and_render():
    """The shipped examples (Ubuntu, Rocky/Alma, Debian) all load and render."""
    entries = WorkflowStore(EXAMPLE_WORKFLOWS).entries()
    ids = " ".join(entry.id for entry in entries)
    assert "ubuntu" in ids and "debian" in ids
    assert "rocky" in ids or "alma" in ids
    for entry in entries:
        assert entry.error is None, entry.error
        assert check(entry.workflow) == []
        assert entry.workflow.kernel_path.startswith(("http://", "https://"))
        assert entry.workflow.initrd_path.startswith(("http://", "https://"))

"""End to end: ``provisioner serve`` on a loopback port, walked over real HTTP.

An unknown machine boots and is discovered; an operator assigns a workflow and moves it to
pending; its next boot gets the installer (and it is now installing); the boot after that
goes to the local disk. The walk runs on SQLite and on PostgreSQL (``database_url``).
"""

from pathlib import Path

import dbcheck
import pytest
from alembic.script import ScriptDirectory
from serverproc import Response
from serverproc import ServerProcess
from serverproc import start_server
from workflowfiles import write_test_workflow

from provisioner import MIGRATIONS_DIR

pytestmark = pytest.mark.e2e

MAC_AS_BOOTED = "52-54-00-AB-CD-EF"
MAC = "52:54:00:ab:cd:ef"
HOSTNAME = "node-e2e-01"
WORKFLOW_ID = "e2e-os"
#: Generous: only turns a server that never stops into a failure (speed: make bench).
STOP_DEADLINE_SECONDS = 60


@pytest.fixture
def workflows_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(
        directory,
        WORKFLOW_ID,
        description="A workflow the end-to-end test renders",
        initrd_path="/files/e2e-os/initrd.img",
        cmdline="console=ttyS0 ip=dhcp node=${node_id} mac=${mac} host=${hostname}"
        " url=${server}/done",
    )
    return directory


def script_lines(response: Response) -> list[str]:
    """The iPXE script's lines, after checking it is sent as one."""
    assert response.content_type == "text/plain", response
    lines = response.text.splitlines()
    assert lines[0] == "#!ipxe", response.text
    return lines


def command(lines: list[str], verb: str) -> str:
    """The one line running ``verb``, without its ``|| goto failed`` handler."""
    found = [line for line in lines if line.split(" ", 1)[0] == verb]
    assert len(found) == 1, (verb, lines)
    action, _, handler = found[0].partition(" || ")
    assert handler == "goto failed", found[0]
    return action


def boot(server: ServerProcess, mac: str = MAC) -> list[str]:
    response = server.get(f"/api/v1/boot?mac={mac}")
    assert response.status == 200, response
    return script_lines(response)


def node(server: ServerProcess, ref: str = MAC) -> dict:
    status, _, body = server.get(f"/api/v1/nodes/{ref}")
    assert status == 200, body
    return body["data"]


def test_unknown_machine_is_discovered_installed_then_boots_locally(
    tmp_path, workflows_dir, database_url
):
    with start_server(tmp_path, database_url=database_url, WORKFLOWS_DIR=workflows_dir) as server:
        lines = boot(server, MAC_AS_BOOTED)
        discovered = node(server)
        node_id = discovered["id"]
        assert discovered["state"] == "discovered"
        assert discovered["ip_address"] == "127.0.0.1"
        assert f"registered {MAC} as node {node_id}" in "\n".join(lines)
        assert lines[-1] == "exit"

        status, _, body = server.patch_json(
            f"/api/v1/nodes/{node_id}", {"workflow_id": WORKFLOW_ID, "hostname": HOSTNAME}
        )
        assert status == 200, body
        assert body["data"]["workflow_id"] == WORKFLOW_ID
        status, _, body = server.patch_json(
            f"/api/v1/nodes/{node_id}/state", {"state": "pending", "comment": "e2e: install"}
        )
        assert status == 200, body
        assert node(server, node_id)["state"] == "pending"

        lines = boot(server)
        assert command(lines, "kernel") == (
            f"kernel {server.url}/files/e2e-os/vmlinuz console=ttyS0 ip=dhcp node={node_id} "
            f"mac={MAC} host={HOSTNAME} url={server.url}/done"
        )
        # a path without a scheme names a file of ASSETS_DIR, served at /assets/
        assert command(lines, "initrd") == f"initrd {server.url}/assets/files/e2e-os/initrd.img"
        assert command(lines, "boot") == "boot"
        verbs = [line.split(" ", 1)[0] for line in lines]
        assert verbs.index("kernel") < verbs.index("initrd") < verbs.index("boot")
        installing = node(server)
        assert installing["state"] == "installing"
        assert installing["install_attempts"] == 0

        lines = boot(server)
        assert not {"kernel", "initrd", "boot"} & {line.split(" ", 1)[0] for line in lines}
        assert lines[-1] == "exit"
        assert node(server)["state"] == "installing"

        status, _, body = server.get(f"/api/v1/nodes/{node_id}/history")
        assert status == 200, body
        history = [
            (entry["from_state"], entry["to_state"], entry["triggered_by"])
            for entry in body["data"]
        ]
        assert history == [
            (None, "discovered", "boot"),
            ("discovered", "pending", "admin"),
            ("pending", "installing", "boot"),
        ]
        assert body["total"] == 3
        assert body["data"][1]["comment"] == "e2e: install"
        assert body["data"][2]["metadata"]["workflow_id"] == WORKFLOW_ID


@pytest.mark.parametrize("backend", ["sqlite"])
def test_serve_migrates_an_empty_database_and_stops_on_sigterm(
    tmp_path, workflows_dir, database_url
):
    """``serve`` builds the schema in a database file that does not exist yet; SIGTERM stops it.

    SQLite only: it starts from no database at all, and the PostgreSQL scratch database is
    migrated (by the same ``upgrade_database`` that ``serve`` runs) before any test uses it.
    """
    database = tmp_path / "provisioner.db"
    assert database_url == f"sqlite:///{database}"
    assert not database.exists()
    with start_server(tmp_path, database_url=database_url, WORKFLOWS_DIR=workflows_dir) as server:
        status, _, body = server.get("/api/v1/nodes")
        assert status == 200, body
        assert (body["success"], body["data"], body["total"]) == (True, [], 0)
        versions = dbcheck.rows(database_url, "SELECT version_num FROM alembic_version")
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert versions == [(head,)]
        assert f"serving on {server.url}/" in server.log_text()

        # A stop that hangs is killed after the deadline, and the exit code shows it.
        exit_code = server.stop(timeout=STOP_DEADLINE_SECONDS)
    assert exit_code == 0, server.log_tail()
    assert "provisioner: stopped" in server.log_text(), server.log_tail()

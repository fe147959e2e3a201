"""End to end with a real iPXE (QEMU, as in test_e2e_qemu.py): the console boot menu.

1. A new machine is shown the menu on its serial console; nobody presses a key, and after
   the timeout iPXE boots the local disk (here: none, so the BIOS gives up and QEMU exits).
2. Someone presses ``1``: iPXE fetches the signed choice URL, the node moves to pending and
   on to installing, and iPXE boots the installer's kernel.

The serial port is a socket chardev (its output also logged to the console file), so the
test can type at the console.
"""

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess
from serverproc import free_port
from serverproc import sqlite_settings

from e2e.test_e2e_qemu import HOST_FROM_GUEST
from e2e.test_e2e_qemu import INITRD_PATH
from e2e.test_e2e_qemu import KERNEL_MESSAGE
from e2e.test_e2e_qemu import KERNEL_PATH
from e2e.test_e2e_qemu import MAC
from e2e.test_e2e_qemu import WORKFLOW_ID
from e2e.test_e2e_qemu import WORKFLOW_NAME
from e2e.test_e2e_qemu import FileServer
from e2e.test_e2e_qemu import VirtualMachine
from e2e.test_e2e_qemu import file_server  # noqa: F401  (fixture)
from e2e.test_e2e_qemu import node
from e2e.test_e2e_qemu import qemu  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MENU_TIMEOUT_SECONDS = 3
MENU_TITLE = f"provisioner: {MAC} is waiting for an operator"


class ConsoleVM(VirtualMachine):
    """A VM whose serial console is a socket the test can type into."""

    def __init__(self, *args, socket_path: Path, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.socket_path = socket_path
        self._connection: socket.socket | None = None
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        command = super().command()
        index = command.index("-serial")
        command[index : index + 2] = [
            "-chardev",
            f"socket,id=s0,path={self.socket_path},server=on,wait=off,logfile={self.console_path}",
            "-serial",
            "chardev:s0",
        ]
        return command

    def type(self, keys: bytes) -> None:
        """Send keys to the console (connecting on first use; output is drained)."""
        if self._connection is None:
            self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._connection.connect(str(self.socket_path))
            self._reader = threading.Thread(target=self._drain, daemon=True)
            self._reader.start()
        self._connection.sendall(keys)

    def _drain(self) -> None:
        assert self._connection is not None
        try:
            while self._connection.recv(4096):
                pass
        except OSError:
            pass

    def __exit__(self, *exc_info) -> None:
        super().__exit__(*exc_info)
        if self._connection is not None:
            self._connection.close()


@pytest.fixture
def server(tmp_path: Path, file_server: FileServer) -> Iterator[ServerProcess]:  # noqa: F811
    """``provisioner serve`` with the boot menu on and one workflow to choose."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / f"{WORKFLOW_ID}.yaml").write_text(
        f"id: {WORKFLOW_ID}\n"
        f"name: {WORKFLOW_NAME}\n"
        f"kernel_path: {file_server.url_from_guest(KERNEL_PATH)}\n"
        f"initrd_path: {file_server.url_from_guest(INITRD_PATH)}\n"
        "cmdline: console=ttyS0 node=${node_id}\n"
    )
    port = free_port()
    env = sqlite_settings(
        tmp_path,
        WORKFLOWS_DIR=workflows,
        SERVER_URL=f"http://{HOST_FROM_GUEST}:{port}",
        BOOT_MENU="true",
        BOOT_MENU_TIMEOUT_SECONDS=str(MENU_TIMEOUT_SECONDS),
    )
    with ServerProcess(env, tmp_path, port=port) as process:
        yield process


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A short path for the console socket (a Unix socket path has 107 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="menu-") as directory:
        yield Path(directory) / "console.sock"


def console_vm(qemu_binary: str, tmp_path: Path, server: ServerProcess, path: Path) -> ConsoleVM:
    bootfile = f"http://{HOST_FROM_GUEST}:{server.port}/api/v1/ipxe/boot.ipxe"
    return ConsoleVM(qemu_binary, tmp_path, bootfile, MAC, socket_path=path)


def test_nobody_at_the_console_the_menu_times_out_into_the_local_disk(
    qemu,  # noqa: F811
    tmp_path,
    server,
    socket_path,
    file_server,  # noqa: F811
):
    with console_vm(qemu, tmp_path, server, socket_path) as vm:
        vm.wait_until(lambda: MENU_TITLE in vm.console(), "the boot menu on the console")
        vm.wait_until_finished()

        console = vm.console()
        assert "provisioner: booting from local disk" in console, vm.describe()
        assert "No bootable device" in console, vm.describe()
        assert node(server)["state"] == "discovered"
        assert file_server.paths() == []


def test_pressing_a_key_at_the_menu_installs_that_workflow(
    qemu,  # noqa: F811
    tmp_path,
    server,
    socket_path,
    file_server,  # noqa: F811
):
    with console_vm(qemu, tmp_path, server, socket_path) as vm:
        vm.wait_until(lambda: MENU_TITLE in vm.console(), "the boot menu on the console")
        vm.type(b"1")
        vm.wait_until(
            lambda: KERNEL_MESSAGE.decode() in vm.console(), "the chosen installer's kernel"
        )

        chosen = node(server)
        assert (chosen["state"], chosen["workflow_id"]) == ("installing", WORKFLOW_ID)
        assert file_server.paths() == [KERNEL_PATH, INITRD_PATH]
        status, _, body = server.get(f"/api/v1/nodes/{MAC}/history")
        moves = [(h["from_state"], h["to_state"], h["triggered_by"]) for h in body["data"]]
        assert moves == [
            (None, "discovered", "boot"),
            ("discovered", "pending", "admin"),
            ("pending", "installing", "boot"),
        ]

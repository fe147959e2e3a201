"""End to end with a real iPXE: QEMU network-boots machines against ``provisioner serve``.

Each test boots one VM whose only boot device is a virtio NIC. Its option ROM is Debian's
stock iPXE (``ipxe-qemu``); QEMU's user network hands it ``/api/v1/ipxe/boot.ipxe`` as the
DHCP boot file and forwards ``10.0.2.2`` to the host's loopback, where the server listens.
So the chain script, the ``${net0/mac}``/``${uuid}``/``${serial}`` it expands and every
script the server answers with are run by iPXE itself, not by a parser of ours.

1. An unknown machine is registered as discovered with the MAC, SMBIOS UUID and serial
   iPXE read from the (virtual) hardware, and boots on locally.
2. A pending node runs the installer script: iPXE fetches the kernel and then the initrd
   from a test HTTP server and boots the "kernel", and the node is installing.
3. An installing node is told to boot locally: nothing is fetched, it stays installing.
4. The whole loop with no fake in it, where Debian's ``linux-image-amd64`` is installed: iPXE
   boots that kernel with a busybox initramfs built here, whose ``/init``
   (``qemu/init.sh``) fetches the served ``report.sh`` and reports install_started,
   progress and install_complete with the node's report token; the node is installed.

QEMU exits 0 whether or not iPXE succeeded, so every verdict comes from the server, the file
server and the VM's serial console. A local boot ends with iPXE's ``exit``; the BIOS then
finds no disk and, with ``reboot-timeout=0`` and ``-no-reboot``, QEMU exits, which tells the
test the VM is done (test 4's ``/init`` powers off instead). Test 2's fake kernel halts the
VM, which is killed once the test has seen what it waits for. A VM that is not done by its
deadline is killed and the test fails with QEMU's output and the serial console.
"""

import functools
import gzip
import http.server
import lzma
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import Self

import pytest
from loopbackhttp import LoopbackHTTPServer
from paths import TESTS_DIR
from serverproc import ServerProcess
from serverproc import free_port
from serverproc import sqlite_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QEMU = "qemu-system-x86_64"
#: The option ROM QEMU loads for ``virtio-net-pci`` (Debian's ``ipxe-qemu`` ships it).
IPXE_ROM = "efi-virtio.rom"
#: The host's loopback as the guest sees it on QEMU's user network.
HOST_FROM_GUEST = "10.0.2.2"
#: QEMU's user-network DHCP server truncates a longer boot file name.
MAX_BOOTFILE_CHARS = 127
#: How long one VM may take to finish (here, under TCG: 6-8 s; 20 s with the real kernel).
VM_DEADLINE_SECONDS = 45
VM_STOP_SECONDS = 5
CONSOLE_TAIL_CHARS = 3000

MAC = "52:54:00:e2:e0:01"
SYSTEM_UUID = "5a1e0e2e-9c1d-4f5e-8a7b-0e2e0000a001"
SERIAL = "E2E-QEMU-0001"

WORKFLOW_ID = "e2e-qemu"
WORKFLOW_NAME = "E2E QEMU OS"
KERNEL_PATH = "/e2e-qemu/vmlinuz"
INITRD_PATH = "/e2e-qemu/initrd.img"
KERNEL_MESSAGE = b"e2e fake installer kernel started"

#: The "kernel": a 16-bit PXE boot program (iPXE runs any small file with no known signature
#: as one, loaded at 0000:7C00) that prints ``KERNEL_MESSAGE`` on COM1 and halts, so the
#: serial console shows that iPXE's ``boot`` ran it and the VM then sits still.
FAKE_KERNEL = (
    bytes.fromhex(
        "fc"  # 7C00  cld
        "baf803"  # 7C01  mov dx, 0x3f8        ; COM1 data register
        "be147c"  # 7C04  mov si, 0x7c14       ; the message, right after this code
        "2eac"  # 7C07  next: lodsb cs:[si]
        "84c0"  # 7C09  test al, al
        "7403"  # 7C0B  jz halt
        "ee"  # 7C0D  out dx, al
        "ebf7"  # 7C0E  jmp next
        "fa"  # 7C10  halt: cli
        "f4"  # 7C11  hlt
        "ebfd"  # 7C12  jmp 7C11
    )
    + KERNEL_MESSAGE
    + b"\r\n\0"
)
FAKE_INITRD = b"e2e fake initrd\n"

LINUX_WORKFLOW_ID = "e2e-qemu-linux"
LINUX_KERNEL_PATH = "/linux/vmlinuz"
LINUX_INITRD_PATH = "/linux/initramfs.cpio.gz"
INIT_SCRIPT = TESTS_DIR / "qemu" / "init.sh"
#: The guest's NIC driver; Debian builds it (and what it needs) as modules.
NIC_MODULES = ("virtio_pci", "virtio_net")


def qemu_data_directories(qemu: str) -> list[Path]:
    """The directories QEMU searches for firmware and option ROMs (``-L help``)."""
    result = subprocess.run(
        [qemu, "-L", "help"], capture_output=True, text=True, timeout=30, check=False
    )
    return [Path(line.strip()) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def qemu() -> str:
    """The QEMU binary, or a skip saying what is missing."""
    binary = shutil.which(QEMU)
    if binary is None:
        pytest.skip(f"{QEMU} not found: install Debian's qemu-system-x86 (make e2e-deps)")
    directories = qemu_data_directories(binary)
    if not any((directory / IPXE_ROM).is_file() for directory in directories):
        searched = ", ".join(str(directory) for directory in directories) or "nothing"
        pytest.skip(
            f"iPXE ROM {IPXE_ROM} not found (searched {searched}): "
            "install Debian's ipxe-qemu (make e2e-deps)"
        )
    return binary


# -- the file server the installer's kernel and initrd come from ---------------------------


class FileServer(LoopbackHTTPServer):
    """A tiny HTTP server on loopback serving fixed files; records what was asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []  # (path, User-Agent)
        self._lock = threading.Lock()
        super().__init__(functools.partial(_FileHandler, self))

    def url_from_guest(self, path: str) -> str:
        return f"http://{HOST_FROM_GUEST}:{self.port}{path}"

    def record(self, path: str, user_agent: str) -> None:
        with self._lock:
            self.requests.append((path, user_agent))

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        with self._lock:
            return [path for path, _ in self.requests]


class _FileHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, server_files: FileServer, *args: Any) -> None:
        self.server_files = server_files
        super().__init__(*args)

    def do_GET(self) -> None:
        self.server_files.record(self.path, self.headers.get("User-Agent", ""))
        body = self.server_files.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the virtual machine --------------------------------------------------------------------


class VirtualMachine:
    """One QEMU guest network-booting through iPXE; always killed when the block ends."""

    def __init__(
        self, qemu: str, directory: Path, bootfile_url: str, mac: str, firmware: Path | None = None
    ) -> None:
        assert len(bootfile_url) <= MAX_BOOTFILE_CHARS, bootfile_url
        self.qemu = qemu
        self.firmware = firmware  # None: QEMU's BIOS (SeaBIOS); else a UEFI image (OVMF)
        self.bootfile_url = bootfile_url
        self.mac = mac
        self.console_path = directory / f"vm-{mac.replace(':', '')}-serial.log"
        self.output_path = directory / f"vm-{mac.replace(':', '')}-qemu.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            self.qemu,
            "-machine", "pc,accel=tcg,graphics=off",  # graphics=off: BIOS text on serial
            "-m", "256",
            "-nodefaults",
            "-display", "none",
            "-serial", f"file:{self.console_path}",
            "-uuid", SYSTEM_UUID,
            "-smbios", f"type=1,serial={SERIAL}",
            "-netdev", f"user,id=n0,bootfile={self.bootfile_url}",
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}",
            # Network only; when that boot ends the BIOS reboots at once, so QEMU exits.
            "-boot", "order=n,reboot-timeout=0",
            "-no-reboot",
            *(["-bios", str(self.firmware)] if self.firmware else []),
        ]  # fmt: skip

    def __enter__(self) -> Self:
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(VM_STOP_SECONDS)

    def has_exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def console(self) -> str:
        """The serial console so far, with the BIOS's 80-column line wrapping undone."""
        try:
            raw = self.console_path.read_bytes()
        except FileNotFoundError:
            return ""
        return raw.decode("ascii", errors="replace").replace("\r", "").replace("\n", "")

    def describe(self) -> str:
        """QEMU's own output and the tail of the serial console, for a failure message."""
        output = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        console = (
            self.console_path.read_bytes().decode("ascii", errors="replace")
            if self.console_path.exists()
            else ""
        )
        return (
            f"QEMU exit code {self.process.poll() if self.process else None}; "
            f"QEMU output: {output.strip() or '(none)'}\n"
            f"serial console ({self.console_path}), last {CONSOLE_TAIL_CHARS} chars:\n"
            f"{console[-CONSOLE_TAIL_CHARS:]}"
        )

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until it holds; fail if QEMU exits or the deadline passes."""
        deadline = time.monotonic() + VM_DEADLINE_SECONDS
        while not condition():
            if self.has_exited() and not condition():
                pytest.fail(f"the VM stopped before {what}\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {VM_DEADLINE_SECONDS} s\n{self.describe()}")
            time.sleep(0.2)

    def wait_until_finished(self) -> None:
        """Wait for QEMU to exit: the BIOS found nothing to boot, or the guest powered off."""
        self.wait_until(self.has_exited, "end of the boot (QEMU still running)")


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    files = {KERNEL_PATH: FAKE_KERNEL, INITRD_PATH: FAKE_INITRD}
    with FileServer(files) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, file_server: FileServer) -> Iterator[ServerProcess]:
    """``provisioner serve`` whose scripts point the guest at ``10.0.2.2:<its port>``."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / f"{WORKFLOW_ID}.yaml").write_text(
        f"id: {WORKFLOW_ID}\n"
        f"name: {WORKFLOW_NAME}\n"
        f"kernel_path: {file_server.url_from_guest(KERNEL_PATH)}\n"
        f"initrd_path: {file_server.url_from_guest(INITRD_PATH)}\n"
        "cmdline: console=ttyS0 node=${node_id} report_url=${report_url}\n"
    )
    (workflows / f"{LINUX_WORKFLOW_ID}.yaml").write_text(
        f"id: {LINUX_WORKFLOW_ID}\n"
        "name: E2E Linux with a busybox initramfs\n"
        f"kernel_path: {file_server.url_from_guest(LINUX_KERNEL_PATH)}\n"
        f"initrd_path: {file_server.url_from_guest(LINUX_INITRD_PATH)}\n"
        "cmdline: console=ttyS0 panic=-1 e2e_server=${server} e2e_token=${report_token}\n"
    )
    for boot_mode in ("uefi", "bios"):
        (workflows / f"{LINUX_WORKFLOW_ID}-{boot_mode}.yaml").write_text(
            (workflows / f"{LINUX_WORKFLOW_ID}.yaml")
            .read_text()
            .replace(f"id: {LINUX_WORKFLOW_ID}\n", f"id: {LINUX_WORKFLOW_ID}-{boot_mode}\n")
            # An EFI-stub kernel loads the initrd that initrd= names from iPXE's files.
            .replace("cmdline: ", f"cmdline: initrd={Path(LINUX_INITRD_PATH).name} ")
            + f"boot_mode: {boot_mode}\n"
        )
    # SERVER_URL needs the port before the server starts, so pick it here.
    port = free_port()
    env = sqlite_settings(
        tmp_path, WORKFLOWS_DIR=workflows, SERVER_URL=f"http://{HOST_FROM_GUEST}:{port}"
    )
    with ServerProcess(env, tmp_path, port=port) as process:
        yield process


def boot_vm(
    qemu: str, tmp_path: Path, server: ServerProcess, firmware: Path | None = None
) -> VirtualMachine:
    bootfile = f"http://{HOST_FROM_GUEST}:{server.port}/api/v1/ipxe/boot.ipxe"
    return VirtualMachine(qemu, tmp_path, bootfile, MAC, firmware)


def node(server: ServerProcess, ref: str = MAC) -> dict[str, Any]:
    status, _, body = server.get(f"/api/v1/nodes/{ref}")
    assert status == 200, body
    return body["data"]


def node_count(server: ServerProcess) -> int:
    status, _, body = server.get("/api/v1/nodes")
    assert status == 200, body
    return body["total"]


def create_pending_node(server: ServerProcess, workflow_id: str = WORKFLOW_ID) -> str:
    """Register ``MAC`` by hand with ``workflow_id`` and queue it for install."""
    status, _, body = server.post_json(
        "/api/v1/nodes", {"mac_address": MAC, "workflow_id": workflow_id}
    )
    assert status == 201, body
    node_id = body["data"]["id"]
    status, _, body = server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "pending"})
    assert status == 200, body
    return node_id


# -- the tests ------------------------------------------------------------------------------


def test_unknown_machine_is_registered_with_the_facts_ipxe_reads(qemu, tmp_path, server):
    with boot_vm(qemu, tmp_path, server) as vm:
        vm.wait_until_finished()

        registered = node(server)
        assert registered["state"] == "discovered", vm.describe()
        assert registered["mac_address"] == MAC
        assert registered["system_uuid"] == SYSTEM_UUID
        assert registered["serial_number"] == SERIAL
        assert node_count(server) == 1
        console = vm.console()
        assert f"provisioner: registered {MAC} as node {registered['id']}" in console, (
            vm.describe()
        )
        assert "No bootable device" in console, vm.describe()  # iPXE ran `exit`


def test_pending_node_fetches_kernel_and_initrd_and_is_installing(
    qemu, tmp_path, server, file_server
):
    node_id = create_pending_node(server)
    with boot_vm(qemu, tmp_path, server) as vm:
        vm.wait_until(
            lambda: KERNEL_MESSAGE.decode() in vm.console(), "fake kernel message on the console"
        )

        assert file_server.paths() == [KERNEL_PATH, INITRD_PATH], vm.describe()
        assert all(agent.startswith("iPXE/") for _, agent in file_server.requests), (
            file_server.requests
        )
        installing = node(server)
        assert installing["state"] == "installing"
        assert installing["id"] == node_id
        assert installing["system_uuid"] == SYSTEM_UUID
        console = vm.console()
        assert f"provisioner: installing {WORKFLOW_NAME} on node {node_id}" in console
        assert "installer failed to start" not in console, vm.describe()


def test_installing_node_boots_locally_and_fetches_nothing(qemu, tmp_path, server, file_server):
    node_id = create_pending_node(server)
    first_boot = server.get(f"/api/v1/boot?mac={MAC}")  # the installer was served ...
    assert first_boot.status == 200, first_boot
    assert node(server)["state"] == "installing"
    assert node(server)["system_uuid"] is None
    with boot_vm(qemu, tmp_path, server) as vm:  # ... and the installed system reboots
        vm.wait_until_finished()

        rebooted = node(server)
        assert rebooted["system_uuid"] == SYSTEM_UUID, "the VM's boot request never arrived"
        assert rebooted["state"] == "installing"
        assert rebooted["install_attempts"] == 0
        assert file_server.paths() == []
        console = vm.console()
        assert f"node {node_id} is installing; booting the installed system" in console, (
            vm.describe()
        )
        assert "No bootable device" in console, vm.describe()


# -- 4. a real kernel and a busybox initramfs -----------------------------------------------


def find_linux_kernel() -> tuple[Path, Path]:
    """A readable kernel image and its ``/lib/modules/<version>``, or a skip.

    Debian's ``/vmlinuz`` symlink names the newest kernel; ``/boot`` is searched without it.
    """
    for kernel in [Path("/vmlinuz"), *sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)]:
        version = kernel.resolve().name.removeprefix("vmlinuz-")
        modules = Path("/lib/modules") / version
        if os.access(kernel, os.R_OK) and (modules / "modules.dep").is_file():
            return kernel, modules
    pytest.skip(
        "no readable /vmlinuz or /boot/vmlinuz-<version> with its /lib/modules/<version>: "
        "install Debian's linux-image-amd64 to run the real-kernel test"
    )


def module_load_order(modules: Path, names: tuple[str, ...]) -> list[str]:
    """Paths (under ``modules``) of ``names`` and what they need, dependencies first."""
    needs: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        module, _, dependencies = line.partition(":")
        needs[module] = dependencies.split()
    by_name = {Path(path).name.split(".ko")[0].replace("-", "_"): path for path in needs}
    builtin = (
        (modules / "modules.builtin").read_text() if (modules / "modules.builtin").exists() else ""
    )
    order: list[str] = []

    def visit(path: str) -> None:
        if path not in order:
            for dependency in needs[path]:
                visit(dependency)
            order.append(path)

    for name in names:
        if name in by_name:
            visit(by_name[name])
        elif f"/{name}.ko" not in builtin:
            pytest.skip(f"kernel modules {modules} have no {name}, the guest's NIC driver")
    return order


def module_bytes(path: Path) -> bytes:
    """A module file, decompressed for busybox ``insmod``."""
    if path.suffix == ".xz":
        return lzma.decompress(path.read_bytes())
    if path.suffix == ".gz":
        return gzip.decompress(path.read_bytes())
    if path.suffix != ".ko":
        pytest.skip(f"cannot decompress kernel module {path} for busybox insmod")
    return path.read_bytes()


def shared_libraries(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads, as ``ldd`` names them (none if static)."""
    if shutil.which("ldd") is None:
        return []
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    return [Path(path) for path in re.findall(r"(/\S+) \(0x", result.stdout)]


class Cpio:
    """An initramfs archive in the ``newc`` format the kernel unpacks."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.directories: set[str] = set()
        self.inode = 0

    def _entry(
        self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.inode += 1
        fields = (self.inode, mode, 0, 0, 1, 0, len(body), 0, 0, *rdev, len(name) + 1, 0)
        self.data += b"070701" + "".join(f"{value:08x}" for value in fields).encode()
        self.data += name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        """Add ``name`` and its parents, once each."""
        parts = Path(name).parts
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self.directories:
                self.directories.add(path)
                self._entry(path, 0o040755)

    def file(self, name: str, body: bytes, mode: int = 0o100644) -> None:
        if "/" in name:
            self.directory(str(Path(name).parent))
        self._entry(name, mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def character_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def build_initramfs(busybox: Path, modules: Path) -> bytes:
    """Busybox (with its libraries), the NIC modules and ``/init``, as a gzipped cpio."""
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "tmp", "var/tmp", "modules"):
        archive.directory(directory)
    archive.character_device("dev/console", 5, 1)
    archive.file("init", INIT_SCRIPT.read_bytes(), 0o100755)
    archive.file("bin/busybox", busybox.read_bytes(), 0o100755)
    archive.symlink("bin/sh", "busybox")
    for library in shared_libraries(busybox):
        archive.file(str(library).lstrip("/"), library.read_bytes(), 0o100755)
    order = []
    for relative in module_load_order(modules, NIC_MODULES):
        name = Path(relative).name.split(".ko")[0] + ".ko"
        archive.file(f"modules/{name}", module_bytes(modules / relative))
        order.append(name)
    archive.file("modules/order", "".join(f"{name}\n" for name in order).encode())
    return gzip.compress(archive.finish(), compresslevel=6)


def node_events_oldest_first(server: ServerProcess, node_id: str) -> list[dict[str, Any]]:
    status, _, body = server.get(f"/api/v1/nodes/{node_id}/events?limit=100")
    assert status == 200, body
    return list(reversed(body["data"]))


def test_real_kernel_and_busybox_report_the_install_through_report_sh(
    qemu, tmp_path, server, file_server
):
    kernel, modules = find_linux_kernel()
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not found: install Debian's busybox (make e2e-deps)")
    file_server.files[LINUX_KERNEL_PATH] = kernel.read_bytes()
    file_server.files[LINUX_INITRD_PATH] = build_initramfs(Path(busybox), modules)
    node_id = create_pending_node(server, LINUX_WORKFLOW_ID)
    with boot_vm(qemu, tmp_path, server) as vm:
        vm.wait_until_finished()  # /init powers the VM off, whatever happened

        assert file_server.paths() == [LINUX_KERNEL_PATH, LINUX_INITRD_PATH], vm.describe()
        assert "e2e-init: reports sent" in vm.console(), vm.describe()
        installed = node(server)
        assert installed["state"] == "installed", vm.describe()
        reported = [
            (event["event_type"], event["status"], event["progress"], event["message"])
            for event in node_events_oldest_first(server, node_id)
            if event["event_type"].startswith("install_")
        ]
        assert reported == [
            ("install_started", "success", None, None),
            ("install_progress", "in_progress", 50, "e2e initramfs halfway"),
            ("install_complete", "success", None, "e2e initramfs done"),
        ]


# -- 5. UEFI: OVMF with iPXE's EFI driver -----------------------------------------------------

#: Debian's ``ovmf``: UEFI firmware for QEMU, with its console on the serial line.
OVMF = Path("/usr/share/ovmf/OVMF.fd")
#: OVMF is slower to reach the network than SeaBIOS under TCG.
UEFI_DEADLINE_SECONDS = 180


@pytest.fixture
def ovmf() -> Path:
    if not OVMF.is_file():
        pytest.skip(f"{OVMF} not found: install Debian's ovmf (make e2e-deps)")
    return OVMF


def wait_for_console(vm: VirtualMachine, text: str) -> None:
    deadline = time.monotonic() + UEFI_DEADLINE_SECONDS
    while text not in vm.console():
        if vm.has_exited():
            pytest.fail(f"the VM stopped before {text!r} on the console\n{vm.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} after {UEFI_DEADLINE_SECONDS} s\n{vm.describe()}")
        time.sleep(0.5)


def test_uefi_machine_installs_a_uefi_workflow(qemu, ovmf, tmp_path, server, file_server):
    """OVMF + iPXE's EFI build boot the real kernel of a ``boot_mode: uefi`` workflow."""
    kernel, modules = find_linux_kernel()
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox not found: install Debian's busybox (make e2e-deps)")
    file_server.files[LINUX_KERNEL_PATH] = kernel.read_bytes()
    file_server.files[LINUX_INITRD_PATH] = build_initramfs(Path(busybox), modules)
    node_id = create_pending_node(server, f"{LINUX_WORKFLOW_ID}-uefi")
    with boot_vm(qemu, tmp_path, server, ovmf) as vm:
        wait_for_console(vm, "e2e-init: reports sent")

        installed = node(server)
        assert installed["boot_mode"] == "uefi", installed  # iPXE sent ${platform}=efi
        assert installed["state"] == "installed", vm.describe()
        assert file_server.paths() == [LINUX_KERNEL_PATH, LINUX_INITRD_PATH]
        kinds = [event["event_type"] for event in node_events_oldest_first(server, node_id)]
        assert "install_complete" in kinds, kinds


@pytest.mark.parametrize(
    ("boot_mode", "uefi_machine", "booted"), [("uefi", False, "BIOS"), ("bios", True, "UEFI")]
)
def test_machine_is_not_handed_a_workflow_for_other_firmware(
    qemu, ovmf, tmp_path, server, file_server, boot_mode, uefi_machine, booted
):
    """The script says why on the console; nothing is fetched; the node stays pending."""
    node_id = create_pending_node(server, f"{LINUX_WORKFLOW_ID}-{boot_mode}")
    with boot_vm(qemu, tmp_path, server, ovmf if uefi_machine else None) as vm:
        wait_for_console(vm, f"booted in {booted} mode")

        console = vm.console()
        assert f"needs {boot_mode.upper()} firmware" in console, vm.describe()
        assert f"node {node_id} stays pending" in console
        assert file_server.paths() == []
        stays = node(server)
        assert stays["state"] == "pending"
        assert stays["boot_mode"] == booted.lower()

"""End to end with the real Debian 12 installer: the shipped debian-12 example, for real.

QEMU (TCG) network-boots a machine through Debian's stock iPXE against ``provisioner serve``
running the example workflow from ``examples/workflows/``, with only the kernel and initrd
paths pointed at Debian's ``debian-installer-12-netboot-amd64`` (served by a test file
server). The guest's user network is ``restrict=on``: it reaches nothing but the two
loopback servers of this test, through ``guestfwd`` (a ``socat`` per connection), and gets
no DNS, so d-i cannot reach a mirror and stops on its "Bad archive mirror" dialog. The test
asserts what the issue asks of the example: iPXE fetched the boot script, d-i fetched the
preseed and the hooks, ``install_started`` was recorded, and the hooks' watcher reported
``install_failed`` naming the mirror step while d-i waits on that dialog.

The deadlines only turn a hang into a failure; the watcher reports within 2 minutes of the
dialog by design (docs/installers.md has the measured times). ``make e2e-full`` runs the
opt-in full install (``test_full_install_reports_first_boot``) through a local
caching proxy to the Debian archive (tests/archivecache.py).
"""

import contextlib
import http.client
import http.server
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import Self

import pytest
import yaml
from archivecache import ArchiveCache
from loopbackhttp import LoopbackHTTPServer
from loopbackhttp import forward
from paths import EXAMPLE_WORKFLOWS
from serverproc import ServerProcess
from serverproc import free_port
from serverproc import sqlite_settings

from e2e.test_e2e_qemu import FileServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QEMU = "qemu-system-x86_64"
EXAMPLES = EXAMPLE_WORKFLOWS
DI_PACKAGE = "debian-installer-12-netboot-amd64"
DI_IMAGES = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64")
#: The option ROM QEMU loads for ``virtio-net-pci`` (BIOS and UEFI iPXE in one).
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
#: Addresses on the guest's user network that ``guestfwd`` sends to the test's servers.
SERVER_FROM_GUEST = "10.0.2.100"
FILES_FROM_GUEST = "10.0.2.101"
MAC = "52:54:00:d1:00:01"
#: d-i with restrict=on gets no DNS server from QEMU's DHCP and would ask for one.
EXTRA_CMDLINE = "netcfg/get_nameservers="
#: Generous: under TCG power-on to install_started took ~110 s alone on 2 shared cores.
STARTED_DEADLINE_SECONDS = 15 * 60
#: The watcher reports ~20-30 s after the dialog appears; this only catches a hang.
FAILED_DEADLINE_SECONDS = 6 * 60
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]")


def missing_tools() -> str | None:
    """Why this machine cannot boot the real installer, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} not found: install Debian's qemu-system-x86 (make e2e-deps)"
    if not IPXE_ROM.is_file():
        return f"{IPXE_ROM} not found: install Debian's ipxe-qemu (make e2e-deps)"
    if not (DI_IMAGES / "linux").is_file() or not (DI_IMAGES / "initrd.gz").is_file():
        return f"{DI_IMAGES}/linux not found: install Debian's {DI_PACKAGE} (make e2e-deps)"
    if shutil.which("socat") is None:
        return "socat not found (QEMU's guestfwd runs it): install Debian's socat (make e2e-deps)"
    return None


@pytest.fixture(scope="module")
def debian_installer() -> dict[str, bytes]:
    """The d-i kernel and initrd, or a skip naming the package to install."""
    problem = missing_tools()
    if problem:
        pytest.skip(problem)
    return {
        "/di/linux": (DI_IMAGES / "linux").read_bytes(),
        "/di/initrd.gz": (DI_IMAGES / "initrd.gz").read_bytes(),
    }


# -- a recording proxy in front of the server -----------------------------------------------


class RecordingProxy(LoopbackHTTPServer):
    """An HTTP proxy on loopback to ``provisioner serve``; records each request's path."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[tuple[str, str, str]] = []  # (method, path, User-Agent)
        self._lock = threading.Lock()
        super().__init__(type("Handler", (_ProxyHandler,), {"proxy": self}))

    def record(self, method: str, path: str, user_agent: str) -> None:
        with self._lock:
            self.requests.append((method, path, user_agent))

    def paths(self, pattern: str) -> list[str]:
        """Paths requested so far (URL-decoded) that match ``pattern``."""
        with self._lock:
            paths = [urllib.parse.unquote(path) for _, path, _ in self.requests]
        return [path for path in paths if re.search(pattern, path)]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    proxy: RecordingProxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        self.proxy.record(self.command, self.path, self.headers.get("User-Agent", ""))
        forward(self, self.proxy.target_port, self.path, close=True)

    do_GET = do_POST = do_PUT = do_PATCH = do_HEAD = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the machine ------------------------------------------------------------------------------


def guestfwd(address: str, port: int) -> str:
    """A ``guestfwd`` that runs ``socat`` to loopback ``port`` for each guest connection."""
    return f"guestfwd=tcp:{address}:80-cmd:socat - TCP:127.0.0.1:{port}"


class InstallerMachine:
    """A QEMU guest that network-boots with iPXE; killed when the block ends."""

    def __init__(
        self,
        directory: Path,
        netdev: str,
        *,
        firmware: list[str] | None = None,
        disk: Path | None = None,
        memory_mb: int = 1024,
        name: str = "di",
    ) -> None:
        self.directory = directory
        self.netdev = netdev
        self.firmware = firmware or []
        self.disk = disk
        self.memory_mb = memory_mb
        self.console_path = directory / f"{name}-serial.log"
        self.output_path = directory / f"{name}-qemu.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = [
            QEMU,
            "-machine", "pc,accel=tcg,graphics=off",  # graphics=off: iPXE on the serial line
            "-m", str(self.memory_mb),
            "-nodefaults",
            "-display", "none",
            "-serial", f"file:{self.console_path}",
            *self.firmware,
            "-netdev", self.netdev,
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
        ]  # fmt: skip
        if self.disk is not None:
            command += ["-drive", f"file={self.disk},format=qcow2,if=virtio"]
            command += ["-boot", "order=cn"]  # the disk once installed, else the network
        else:
            command += ["-boot", "order=n,reboot-timeout=0", "-no-reboot"]
        return command

    def __enter__(self) -> Self:
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def console(self) -> str:
        """The serial console so far, ANSI codes stripped."""
        try:
            raw = self.console_path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return ANSI.sub("", raw).replace("\r", "")

    def describe(self) -> str:
        output = self.output_path.read_text(errors="replace") if self.output_path.exists() else ""
        code = self.process.poll() if self.process else None
        return (
            f"QEMU exit code {code}; output: {output.strip() or '(none)'}\n"
            f"serial console ({self.console_path}), last 3000 chars:\n{self.console()[-3000:]}"
        )

    def wait_until(self, condition: Callable[[], Any], what: str, seconds: float) -> Any:
        """Poll ``condition`` until it is truthy; fail if QEMU exits or time runs out."""
        deadline = time.monotonic() + seconds
        while True:
            result = condition()
            if result:
                return result
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"the VM stopped before {what}\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {seconds:.0f} s\n{self.describe()}")
            time.sleep(2)


# -- the server, with the shipped example ---------------------------------------------------


def example_workflow(directory: Path, files_url: str, extra_cmdline: str) -> None:
    """Copy the debian-12 example into ``directory``, booting d-i from ``files_url``."""
    shutil.copytree(EXAMPLES / "debian-12", directory / "debian-12")
    workflow = yaml.safe_load((EXAMPLES / "debian-12.yaml").read_text())
    workflow["kernel_path"] = f"{files_url}/di/linux"
    workflow["initrd_path"] = f"{files_url}/di/initrd.gz"
    workflow["cmdline"] = f"{workflow['cmdline']} {extra_cmdline}"
    (directory / "debian-12.yaml").write_text(yaml.safe_dump(workflow))


@pytest.fixture
def installer_setup(tmp_path: Path, debian_installer: dict[str, bytes]) -> Iterator[Any]:
    """(server, proxy, file server, netdev) for one install of the debian-12 example."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    example_workflow(workflows, f"http://{FILES_FROM_GUEST}", EXTRA_CMDLINE)
    env = sqlite_settings(
        tmp_path, WORKFLOWS_DIR=workflows, SERVER_URL=f"http://{SERVER_FROM_GUEST}"
    )
    with (
        ServerProcess(env, tmp_path, port=free_port()) as server,
        RecordingProxy(server.port) as proxy,
        FileServer(debian_installer) as files,
    ):
        netdev = ",".join(
            (
                "user,id=n0,restrict=on",
                f"bootfile=http://{SERVER_FROM_GUEST}/api/v1/ipxe/boot.ipxe",
                guestfwd(SERVER_FROM_GUEST, proxy.port),
                guestfwd(FILES_FROM_GUEST, files.port),
            )
        )
        yield server, proxy, files, netdev


def create_pending_node(server: ServerProcess, workflow_id: str = "debian-12") -> str:
    status, _, body = server.post_json(
        "/api/v1/nodes", {"mac_address": MAC, "workflow_id": workflow_id}
    )
    assert status == 201, body
    node_id = body["data"]["id"]
    status, _, body = server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "pending"})
    assert status == 200, body
    return node_id


def events(server: ServerProcess, node_id: str) -> list[dict[str, Any]]:
    """The node's events, oldest first."""
    status, _, body = server.get(f"/api/v1/nodes/{node_id}/events?limit=100")
    assert status == 200, body
    return list(reversed(body["data"]))


def event_of(server: ServerProcess, node_id: str, event_type: str) -> dict[str, Any] | None:
    return next((e for e in events(server, node_id) if e["event_type"] == event_type), None)


def test_debian_installer_reports_start_and_the_mirror_dialog_it_stops_on(
    tmp_path, installer_setup
):
    server, proxy, files, netdev = installer_setup
    node_id = create_pending_node(server)
    seen: dict[str, float] = {}  # when things happened, for docs/installers.md only

    def reported_failure(vm: InstallerMachine) -> dict[str, Any] | None:
        if "dialog" not in seen and "Bad archive mirror" in vm.console():
            seen["dialog"] = time.monotonic()
        return event_of(server, node_id, "install_failed")

    with InstallerMachine(tmp_path, netdev) as vm:
        seen["power-on"] = time.monotonic()
        started = vm.wait_until(
            lambda: event_of(server, node_id, "install_started"),
            "install_started",
            STARTED_DEADLINE_SECONDS,
        )
        seen["install_started"] = time.monotonic()
        failed = vm.wait_until(
            lambda: reported_failure(vm),
            "install_failed while d-i waits on its mirror dialog",
            FAILED_DEADLINE_SECONDS,
        )
        seen["install_failed"] = time.monotonic()

    assert proxy.paths(r"^/api/v1/ipxe/boot\.ipxe$"), proxy.requests
    assert proxy.paths(rf"^/api/v1/boot\?mac={MAC}&.*platform=pcbios"), proxy.requests
    assert files.paths() == ["/di/linux", "/di/initrd.gz"], files.requests
    assert proxy.paths(rf"^/api/v1/nodes/{node_id}/config/preseed\.cfg\?token="), proxy.requests
    assert proxy.paths(rf"^/api/v1/nodes/{node_id}/config/hooks\.sh\?token="), proxy.requests
    assert proxy.paths(r"^/api/v1/report\.sh\?mac="), proxy.requests
    assert started["message"] == "debian-installer read the preseed", started
    assert "choose-mirror" in failed["message"], failed
    assert "mirror/bad" in failed["message"] and "Bad archive mirror" in failed["message"]
    assert "provisioner: installing" in vm.console(), vm.describe()
    state = server.get(f"/api/v1/nodes/{node_id}").body["data"]
    assert state["install_attempts"] == 1, state  # pending again: the next boot retries
    assert "Bad archive mirror" in state["last_install_error"], state
    print(  # the figures in docs/installers.md
        "\ntimes (s): "
        + ", ".join(f"{name} {at - seen['power-on']:.0f}" for name, at in seen.items())
    )


# -- opt-in: a whole install through a local caching proxy (make e2e-full) ------------------

FULL_ENV = "PROVISIONER_E2E_FULL"
CACHE_FROM_GUEST = "10.0.2.102"
FULL_DEADLINE_SECONDS = 4 * 60 * 60


full_install_only = pytest.mark.skipif(
    os.environ.get(FULL_ENV) != "1",
    reason=f"needs the Debian archive (and a full install takes hours under TCG): {FULL_ENV}=1 "
    "(make e2e-full) runs it",
)


@contextlib.contextmanager
def archive_install(
    tmp_path: Path, debian_installer: dict[str, bytes], disk: Path
) -> Iterator[tuple[ServerProcess, str, InstallerMachine, ArchiveCache]]:
    """The debian-12 example with the Debian archive reachable through a caching proxy;
    yields (server, node id, the running machine, the cache)."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    # The mirror is the archive by name; d-i's http proxy, a caching proxy, fetches it.
    example_workflow(
        workflows,
        f"http://{FILES_FROM_GUEST}",
        f"{EXTRA_CMDLINE} mirror/http/proxy=http://{CACHE_FROM_GUEST}/",
    )
    preseed = workflows / "debian-12" / "preseed.cfg.j2"
    preseed.write_text(
        preseed.read_text().replace(
            "d-i mirror/http/proxy string\n",
            f"d-i mirror/http/proxy string http://{CACHE_FROM_GUEST}/\n",
        )
    )
    env = sqlite_settings(
        tmp_path, WORKFLOWS_DIR=workflows, SERVER_URL=f"http://{SERVER_FROM_GUEST}"
    )
    with (
        ServerProcess(env, tmp_path, port=free_port()) as server,
        RecordingProxy(server.port) as proxy,
        FileServer(debian_installer) as files,
        ArchiveCache(local={SERVER_FROM_GUEST: proxy.port, FILES_FROM_GUEST: files.port}) as cache,
    ):
        netdev = ",".join(
            (
                "user,id=n0,restrict=on",
                f"bootfile=http://{SERVER_FROM_GUEST}/api/v1/ipxe/boot.ipxe",
                guestfwd(SERVER_FROM_GUEST, proxy.port),
                guestfwd(FILES_FROM_GUEST, files.port),
                guestfwd(CACHE_FROM_GUEST, cache.port),
            )
        )
        node_id = create_pending_node(server)
        with InstallerMachine(tmp_path, netdev, disk=disk, memory_mb=1536, name="full") as vm:
            yield server, node_id, vm, cache
    assert not cache.refused, cache.refused  # nothing but the archive and the test's servers


@full_install_only
def test_full_install_reports_first_boot(tmp_path, debian_installer):
    """d-i installs onto a disk through a caching proxy, reboots, and the system reports."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not found: make e2e-full-deps installs it")
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "8G"], check=True)
    started = time.monotonic()
    with archive_install(tmp_path, debian_installer, disk) as (server, node_id, vm, cache):
        vm.wait_until(
            lambda: (
                event_of(server, node_id, "first_boot")
                or event_of(server, node_id, "install_failed")
            ),
            "first_boot",
            FULL_DEADLINE_SECONDS,
        )
        took = time.monotonic() - started
        seen = events(server, node_id)
        node = server.get(f"/api/v1/nodes/{node_id}").body["data"]
    kinds = [event["event_type"] for event in seen]
    assert "install_failed" not in kinds, (seen, "archive misses:", cache.failures[:5])
    assert "install_complete" in kinds and "first_boot" in kinds, kinds
    assert node["state"] == "active", node
    # for docs/installers.md
    print(
        f"power-on to first_boot: {took / 60:.0f} min; archive cache {cache.hits} hits, "
        f"{cache.misses} misses; events: {kinds}"
    )

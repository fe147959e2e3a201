"""PXE on a real (virtual) LAN: a QEMU machine boots from its NIC to a registered node.

The test builds a LAN in two network namespaces of its own, so no packet leaves them:

- ``lan``: a bridge ``br0`` (10.23.0.2/24), a tap device for the machine's NIC, and
  ``provisioner serve --host 0.0.0.0`` with ``PXE = true`` and ``PXE_INTERFACE = "br0"``,
  which runs dnsmasq as a proxy DHCP and TFTP server on the bridge.
- ``router``: the LAN's own DHCP server, a second dnsmasq on a veth joined to the bridge,
  handing out 10.23.0.100-150 as a home router does, and an IPv6 router advertisement
  (a ULA prefix) so that iPXE does not wait ~15 s for one; ``no-ping`` spares 3 s per offer.

A machine boots: DHCP from the router (its address), boot information from provisioner's
proxy (an iPXE build over TFTP for a plain PXE ROM, the chain URL for iPXE), the chain
script over HTTP, ``/api/v1/boot``, and the node is registered with the address the router
gave it and the firmware it booted with. QEMU is killed as soon as the node exists.

Four paths, each a different first stage:

- BIOS, iPXE ROM: every QEMU NIC ROM is iPXE and SeaBIOS has no PXE of its own, so a plain
  PXE BIOS first stage does not exist under QEMU. The ROM sends the user class ``iPXE`` and
  is chained over HTTP straight away.
- BIOS, the vendor-class path: with ``PXE_CHAINLOAD_IPXE_ROM`` the ROM is told from an
  iPXE loaded over TFTP by its vendor class (``PXEClient:Arch:00000:UNDI:002001``, as every
  PXE ROM sends) and gets ``undionly.kpxe`` over TFTP exactly as a plain PXE ROM would;
  ``undionly.kpxe`` then sends a bare ``PXEClient`` and gets the chain URL.
- UEFI (OVMF), plain PXE: the NIC without an option ROM (``romfile=``) leaves OVMF's own
  PXE client, which gets ``snponly.efi`` over TFTP (by way of port 4011).
- UEFI (OVMF), iPXE ROM: chained over HTTP straight away.

Every test skips, saying why, where namespaces cannot be made (not root, no ``ip``) or a
tool is missing. The Debian iPXE builds print to VGA only, so QEMU runs with
``graphics=off`` for a serial console; this iPXE has no ``poweroff``, so QEMU is killed.
Every helper process is a child of this one, run in the foreground and reaped.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from serverproc import ServerProcess
from serverproc import ServerStartError
from serverproc import sqlite_settings

from e2e.test_e2e_qemu import VirtualMachine
from e2e.test_e2e_qemu import qemu_data_directories

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QEMU = "qemu-system-x86_64"
OVMF = Path("/usr/share/ovmf/OVMF.fd")
IPXE_DIR = Path("/usr/lib/ipxe")
SERVER_ADDRESS = "10.23.0.2"
ROUTER_ADDRESS = "10.23.0.1"
LEASES = ("10.23.0.100", "10.23.0.150")
ULA_PREFIX = "fd23::"
PORT = 8080
#: Generous: TCG on a shared machine. Measured here: BIOS 3-7 s, UEFI 10-17 s.
BIOS_DEADLINE_SECONDS = 180
UEFI_DEADLINE_SECONDS = 360
SETUP_TIMEOUT_SECONDS = 30
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    """Run one ``ip`` command; fail with its error."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Namespace:
    """A network namespace made (and removed) by this test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run_prefix(self) -> list[str]:
        """What runs a command inside: ``ip netns exec`` executes it in place (same pid)."""
        return ["ip", "netns", "exec", self.name]

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` in a thread that has joined this namespace (sockets it opens
        live there); return its result or raise its exception."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.name}") as handle:
                    if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns {self.name}")
                outcome["value"] = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def pids(self) -> list[int]:
        done = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        )
        return [int(pid) for pid in done.stdout.split()]


@dataclass
class Lan:
    lan: Namespace
    router: Namespace
    router_log: Path


ROUTER_CONFIG = f"""\
port=0
bind-interfaces
interface=lan0
leasefile-ro
pid-file=
no-ping
dhcp-range={LEASES[0]},{LEASES[1]},255.255.255.0,1h
enable-ra
dhcp-range={ULA_PREFIX},ra-only
"""


def require_tools() -> None:
    """Skip, saying why, unless this process may make namespaces and every tool is here."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces, a bridge and a tap device need root")
    for tool in ("ip", QEMU):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not found: make e2e-deps installs it")
    if shutil.which("dnsmasq", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        pytest.skip("dnsmasq not found: install Debian's dnsmasq-base (make e2e-deps)")
    if not (IPXE_DIR / "undionly.kpxe").is_file():
        pytest.skip(f"{IPXE_DIR}/undionly.kpxe not found: install Debian's ipxe (make e2e-deps)")
    if not any((path / "efi-virtio.rom").is_file() for path in qemu_data_directories(QEMU)):
        pytest.skip("QEMU's iPXE ROM efi-virtio.rom not found: install Debian's ipxe-qemu")


def wait_for_line(path: Path, text: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"no {text!r} in {path}:\n{path.read_text(errors='replace')}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lan]:
    """The two namespaces, wired and up, with the router's DHCP server running."""
    require_tools()
    directory = tmp_path_factory.mktemp("lan")
    tag = f"{os.getpid()}"
    lan_ns, router_ns = Namespace(f"pxe-lan-{tag}"), Namespace(f"pxe-router-{tag}")
    made: list[Namespace] = []
    router: subprocess.Popen | None = None
    try:
        for namespace in (lan_ns, router_ns):
            try:
                ip("netns", "add", namespace.name)
            except RuntimeError as exc:
                pytest.skip(f"cannot make a network namespace here: {exc}")
            made.append(namespace)
            ip("-n", namespace.name, "link", "set", "lo", "up")
        ip("-n", lan_ns.name, "link", "add", "br0", "type", "bridge", "forward_delay", "0",
           "stp_state", "0")  # fmt: skip
        ip("-n", lan_ns.name, "link", "add", "toRouter", "type", "veth", "peer", "name", "lan0",
           "netns", router_ns.name)  # fmt: skip
        ip("-n", lan_ns.name, "link", "set", "toRouter", "master", "br0")
        try:
            ip("-n", lan_ns.name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        except RuntimeError as exc:
            pytest.skip(f"cannot make a tap device here (/dev/net/tun): {exc}")
        ip("-n", lan_ns.name, "link", "set", "tap0", "master", "br0")
        ip("-n", lan_ns.name, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", "br0")
        ip("-n", router_ns.name, "addr", "add", f"{ROUTER_ADDRESS}/24", "dev", "lan0")
        ip("-n", router_ns.name, "addr", "add", f"{ULA_PREFIX}1/64", "dev", "lan0")
        for device in ("br0", "toRouter", "tap0"):
            ip("-n", lan_ns.name, "link", "set", device, "up")
        ip("-n", router_ns.name, "link", "set", "lan0", "up")

        config = directory / "router.conf"
        config.write_text(ROUTER_CONFIG)
        router_log = directory / "router.log"
        with router_log.open("wb") as output:
            router = subprocess.Popen(
                [*router_ns.run_prefix(), "dnsmasq", "--keep-in-foreground",
                 "--log-facility=-", "--log-dhcp", f"--conf-file={config}"],
                stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            )  # fmt: skip
        wait_for_line(router_log, "DHCP, sockets bound exclusively to interface lan0", router)
        yield Lan(lan_ns, router_ns, router_log)
    finally:
        if router is not None:
            router.terminate()
            router.wait(10)
        for namespace in made:
            for pid in namespace.pids():  # nothing should be left; never let a namespace leak
                os.kill(pid, signal.SIGKILL)
            ip("netns", "delete", namespace.name)


class LanServer(ServerProcess):
    """``provisioner serve --host 0.0.0.0`` in the LAN namespace; requests go in there too."""

    def __init__(self, namespace: Namespace, *args: Any, **kwargs: Any) -> None:
        self.namespace = namespace
        super().__init__(*args, host="127.0.0.1", port=PORT, **kwargs)

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--host") + 1] = "0.0.0.0"
        return [*self.namespace.run_prefix(), *command]

    def request(self, *args: Any, **kwargs: Any) -> Any:
        return self.namespace.call(lambda: super(LanServer, self).request(*args, **kwargs))

    def dnsmasq_pids(self) -> list[int]:
        """The server's dnsmasq children."""
        children: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            children += [int(pid) for pid in (task / "children").read_text().split()]
        return [pid for pid in children if Path(f"/proc/{pid}/comm").read_text().strip()
                == "dnsmasq"]  # fmt: skip


@pytest.fixture
def start_server(lan: Lan, tmp_path: Path) -> Iterator[Callable[..., LanServer]]:
    """Start provisioner in the LAN namespace with PXE on br0 (extra settings as keywords)."""
    started: list[LanServer] = []

    def start(**settings: Any) -> LanServer:
        env = sqlite_settings(
            tmp_path, PXE="true", PXE_INTERFACE="br0", ACCESS_LOG="true", **settings
        )
        server = LanServer(lan.lan, env, tmp_path)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


class LanMachine(VirtualMachine):
    """A QEMU machine whose only NIC is on the LAN's tap device, run inside the namespace."""

    def __init__(self, lan: Lan, directory: Path, mac: str, firmware: Path | None, rom: bool):
        super().__init__(shutil.which(QEMU) or QEMU, directory, "", mac, firmware)
        self.lan = lan
        self.rom = rom

    def command(self) -> list[str]:
        nic = f"virtio-net-pci,netdev=n0,mac={self.mac},bootindex=1"
        return [
            *self.lan.lan.run_prefix(),
            self.qemu,
            "-machine", "pc,accel=tcg,graphics=off",  # the firmware's text on the serial line
            "-m", "256",
            "-nodefaults",
            "-display", "none",
            "-serial", f"file:{self.console_path}",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", nic if self.rom else nic + ",romfile=",
            "-boot", "order=n,reboot-timeout=0",
            "-no-reboot",
            *(["-bios", str(self.firmware)] if self.firmware else []),
        ]  # fmt: skip

    def console(self) -> str:
        return _ANSI.sub("", super().console())


@dataclass(frozen=True)
class BootPath:
    """One way a machine boots, and what provisioner's dnsmasq must have sent it by TFTP."""

    mac: str
    uefi: bool
    rom: bool
    chainload_ipxe_rom: bool
    tftp_file: str | None


PATHS = {
    "bios-ipxe-rom": BootPath("52:54:00:23:00:01", False, True, False, None),
    "bios-vendor-class-undionly": BootPath(
        "52:54:00:23:00:02", False, True, True, "undionly.kpxe"
    ),
    "uefi-ovmf-pxe-snponly": BootPath("52:54:00:23:00:03", True, False, False, "snponly.efi"),
    "uefi-ipxe-rom": BootPath("52:54:00:23:00:04", True, True, False, None),
}


def wait_for_node(server: LanServer, vm: LanMachine, mac: str, deadline_seconds: float) -> dict:
    """Poll the API until the node exists; fail with the machine's console if it does not."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        answer = server.get(f"/api/v1/nodes/{mac}")
        if answer.status == 200:
            return answer.body["data"]
        if vm.has_exited():
            pytest.fail(f"the machine stopped before registering\n{vm.describe()}\n"
                        f"server log:\n{server.log_tail()}")  # fmt: skip
        if time.monotonic() > deadline:
            pytest.fail(f"no node {mac} after {deadline_seconds} s\n{vm.describe()}\n"
                        f"server log:\n{server.log_tail()}")  # fmt: skip
        time.sleep(0.5)


@pytest.mark.parametrize("case", PATHS, ids=list(PATHS))
def test_machine_boots_from_its_nic_to_a_registered_node(lan, start_server, tmp_path, case):
    path = PATHS[case]
    if path.uefi and not OVMF.is_file():
        pytest.skip(f"{OVMF} not found: install Debian's ovmf (make e2e-deps)")
    server = start_server(PXE_CHAINLOAD_IPXE_ROM=str(path.chainload_ipxe_rom).lower())
    firmware = OVMF if path.uefi else None
    with LanMachine(lan, tmp_path, path.mac, firmware, path.rom) as vm:
        node = wait_for_node(
            server, vm, path.mac, UEFI_DEADLINE_SECONDS if path.uefi else BIOS_DEADLINE_SECONDS
        )
    address = node["ip_address"]
    # The guest's requests overlap the test's polls: the boot's line may come a moment later.
    log = server.wait_for_log(f'{address} "GET /api/v1/boot?mac={path.mac}&')

    # Its address came from the router's DHCP, not from provisioner's proxy.
    assert node["state"] == "discovered"
    assert node["boot_mode"] == ("uefi" if path.uefi else "bios")
    assert address.startswith("10.23.0.") and LEASES[0] <= address <= LEASES[1], node
    assert f"DHCPACK(lan0) {address} {path.mac}" in lan.router_log.read_text()
    # provisioner's dnsmasq answered as a proxy, and its lines are in provisioner's log.
    assert f"provisioner.pxe.dnsmasq: dnsmasq-dhcp: PXE(br0) {path.mac} proxy" in log
    tftp = re.compile(rf"dnsmasq-tftp: sent {IPXE_DIR}/(\S+) to {re.escape(address)}\b")
    sent = [(match.start(), match.group(1)) for match in tftp.finditer(log)]
    # iPXE fetched the chain script over HTTP, which asked /api/v1/boot ...
    chain = log.index(f'{address} "GET /api/v1/ipxe/boot.ipxe')
    log.index(f'{address} "GET /api/v1/boot?mac={path.mac}&', chain)
    if path.tftp_file is None:  # ... straight from the ROM,
        assert sent == [], log
    else:  # ... or from the iPXE a plain PXE first stage got, which was not handed itself
        assert {name for _, name in sent} == {path.tftp_file}, log
        assert sent[-1][0] < chain, log


def test_serve_restarts_a_dnsmasq_that_dies_and_stops_its_own(lan, start_server):
    server = start_server()
    (first,) = server.dnsmasq_pids()
    os.kill(first, signal.SIGKILL)

    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    while server.log_text().count("serves proxy DHCP and TFTP on br0") < 2:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    (second,) = server.dnsmasq_pids()
    assert second != first
    assert "PXE: dnsmasq exited with code -9" in server.log_text()

    assert server.stop() == 0
    assert not Path(f"/proc/{second}").exists()  # stopped and reaped with serve
    assert lan.lan.pids() == []


def test_serve_that_cannot_bind_port_67_stops_with_one_line(lan, start_server):
    def hold_port_67() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR
        sock.bind(("0.0.0.0", 67))
        return sock

    holder = lan.lan.call(hold_port_67)
    try:
        with pytest.raises(ServerStartError) as raised:
            start_server()
    finally:
        holder.close()
    errors = [line for line in str(raised.value).splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: PXE on PXE_INTERFACE=br0: dnsmasq could not start: failed to bind DHCP server "
        "socket: Address already in use; another DHCP/TFTP server on this host "
        "holds port 67, 69 or 4011 (a system dnsmasq, isc-dhcp-server, tftpd): stop it, or "
        "set PXE = false and give that dnsmasq the lines of `provisioner pxe config`"
    ]
    assert lan.lan.pids() == []  # neither serve nor a dnsmasq is left behind


def test_serve_with_pxe_on_an_interface_that_does_not_exist_stops_with_one_line(tmp_path):
    env = sqlite_settings(tmp_path, PXE="true", PXE_INTERFACE="nosuch0")
    with pytest.raises(ServerStartError) as raised:
        ServerProcess(env, tmp_path).start()
    errors = [line for line in str(raised.value).splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: config key PXE_INTERFACE: no interface 'nosuch0' on this host "
        "(`ip -brief address` lists them)"
    ]

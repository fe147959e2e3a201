"""The dnsmasq configuration that makes it a proxy DHCP and TFTP server for PXE.

Proxy DHCP answers PXE clients with boot information only, never with an address, so it
runs beside the LAN's own DHCP server (a home router's, say). Two kinds of clients ask:

- A plain PXE ROM (a NIC's firmware, OVMF's PXE) cannot fetch HTTP: it gets an iPXE binary
  over TFTP, picked by the client architecture it sends (DHCP option 93).
- iPXE says so with the user class ``iPXE`` (option 77): it gets the HTTP URL of the
  server's chain script, ``/api/v1/ipxe/boot.ipxe``. The iPXE loaded over TFTP sends that
  user class too, so it is never handed itself again: there is no boot loop.

With ``PXE_CHAINLOAD_IPXE_ROM`` a BIOS iPXE *ROM* (QEMU's, or a NIC flashed with iPXE) is
given ``undionly.kpxe`` first, like a plain PXE ROM. The vendor class tells the two iPXE
apart: the ROM sends ``PXEClient:Arch:00000:UNDI:002001``, as every PXE ROM does, while
``undionly.kpxe`` sends a bare ``PXEClient``.
"""

import errno
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The server's chain script: asks ``/api/v1/boot`` what the machine should do.
CHAIN_PATH = "/api/v1/ipxe/boot.ipxe"
#: The BOOTP ``file`` field holds 128 bytes with its final NUL; dnsmasq cuts a longer name.
MAX_BOOT_FILE_CHARS = 127
#: Linux's interface names are at most 15 bytes (IFNAMSIZ with the NUL).
MAX_INTERFACE_CHARS = 15
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
#: The vendor class a PXE ROM for BIOS sends (an iPXE ROM too): see the module docstring.
BIOS_ROM_VENDOR_CLASS = "PXEClient:Arch:00000:UNDI"


class PxeError(Exception):
    """PXE cannot be set up; the message names the setting to fix."""


@dataclass(frozen=True)
class BootFile:
    """The iPXE binary a plain PXE ROM of one client architecture gets over TFTP."""

    arch: int  #: the client system architecture (DHCP option 93, RFC 4578)
    label: str
    name: str  #: relative to the TFTP root


#: Client architectures and the iPXE builds for them, best first. snponly.efi drives the
#: NIC through the firmware's own network driver (the one that just booted), so it works
#: on NICs iPXE has no driver for. Debian 12's ``ipxe`` has no arm64 build; later ones do.
IPXE_BUILDS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (0, "BIOS", ("undionly.kpxe",)),
    (7, "UEFI x86-64", ("snponly.efi", "ipxe.efi", "ipxe-amd64.efi")),
    (9, "UEFI x86-64", ("snponly.efi", "ipxe.efi", "ipxe-amd64.efi")),
    (11, "UEFI arm64", ("ipxe-arm64.efi", "arm64-efi/snponly.efi")),
)


@dataclass(frozen=True)
class PxePlan:
    """Everything the dnsmasq configuration says, worked out from the settings."""

    interface: str
    address: ipaddress.IPv4Interface  #: the interface's address, with its network
    chain_url: str
    tftp_root: Path
    boot_files: tuple[BootFile, ...]
    missing: tuple[str, ...]  #: architectures with no iPXE build in ``tftp_root``
    chainload_ipxe_rom: bool = False


def interface_ipv4(name: str) -> ipaddress.IPv4Interface:
    """The first IPv4 address of interface ``name`` and its network (Linux ioctls)."""
    if not name or len(name.encode()) > MAX_INTERFACE_CHARS or "/" in name:
        raise PxeError(f"config key PXE_INTERFACE: {name!r} is not an interface name")
    request = struct.pack("256s", name.encode())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)[20:24]
            netmask = fcntl.ioctl(sock.fileno(), _SIOCGIFNETMASK, request)[20:24]
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise PxeError(
                    f"config key PXE_INTERFACE: no interface {name!r} on this host "
                    "(`ip -brief address` lists them)"
                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PxeError(
                    f"config key PXE_INTERFACE: interface {name!r} has no IPv4 address; "
                    "give it one on the LAN the machines boot on"
                ) from None
            raise PxeError(f"config key PXE_INTERFACE: cannot read {name!r}: {exc}") from None
    return ipaddress.IPv4Interface(f"{socket.inet_ntoa(address)}/{socket.inet_ntoa(netmask)}")


def chain_url(server_url: str, address: ipaddress.IPv4Address, port: int) -> str:
    """The URL iPXE chains to: under ``SERVER_URL``, else the interface's address and port."""
    base = server_url.rstrip("/") if server_url else f"http://{address}:{port}"
    url = base + CHAIN_PATH
    if len(url) > MAX_BOOT_FILE_CHARS:
        raise PxeError(
            f"config key SERVER_URL: the chain URL {url} is over {MAX_BOOT_FILE_CHARS} "
            "characters, more than DHCP's boot file field holds; use a shorter SERVER_URL"
        )
    if any(char in url for char in ' ,"#\n'):
        raise PxeError(f"config key SERVER_URL: {url!r} cannot go into a dnsmasq line")
    return url


def find_boot_files(tftp_root: Path) -> tuple[tuple[BootFile, ...], tuple[str, ...]]:
    """The iPXE builds present in ``tftp_root``, and the architectures left without one."""
    found: list[BootFile] = []
    missing: list[str] = []
    for arch, label, names in IPXE_BUILDS:
        name = next((name for name in names if (tftp_root / name).is_file()), None)
        if name is None:
            missing.append(f"{label} (option 93 = {arch}: {' or '.join(names)})")
        else:
            found.append(BootFile(arch, label, name))
    if not found:
        raise PxeError(
            f"config key PXE_IPXE_DIR: {tftp_root} holds no iPXE build "
            "(undionly.kpxe, snponly.efi, ipxe.efi): install Debian's ipxe package"
        )
    return tuple(found), tuple(missing)


def plan_from_config(config: Mapping[str, Any], port: int) -> PxePlan:
    """Work out the PXE setup from the settings and the port the server listens on."""
    interface = config["PXE_INTERFACE"]
    if not interface:
        raise PxeError(
            'config key PXE_INTERFACE: set it to the interface on the machines\' LAN (e.g. "eth0")'
        )
    address = interface_ipv4(interface)
    boot_files, missing = find_boot_files(Path(config["PXE_IPXE_DIR"]))
    return PxePlan(
        interface=interface,
        address=address,
        chain_url=chain_url(config["SERVER_URL"], address.ip, port),
        tftp_root=Path(config["PXE_IPXE_DIR"]),
        boot_files=boot_files,
        missing=missing,
        chainload_ipxe_rom=config["PXE_CHAINLOAD_IPXE_ROM"],
    )


def render(plan: PxePlan) -> str:
    """The dnsmasq configuration file for ``plan``."""
    return "\n".join([*_instance_lines(plan), "", *_proxy_lines(plan), "", *_boot_lines(plan)])


def _instance_lines(plan: PxePlan) -> list[str]:
    """What makes this dnsmasq an instance of its own: no DNS, one interface, no files."""
    return [
        "# dnsmasq as provisioner's proxy DHCP + TFTP server (provisioner pxe config).",
        "# Run it as an instance of its own: dnsmasq --keep-in-foreground --conf-file=THIS",
        "# (with an existing dnsmasq, merge the lines from dhcp-range on).",
        "port=0",  # no DNS: the router (or whatever the LAN has) answers DNS
        "bind-interfaces",
        f"interface={plan.interface}",
        "leasefile-ro",
        "pid-file=",
    ]


def _proxy_lines(plan: PxePlan) -> list[str]:
    network = plan.address.network
    return [
        f"# Boot information only, for PXE clients on {network}: addresses stay with the",
        "# LAN's own DHCP server.",
        f"dhcp-range={network.network_address},proxy,{network.netmask}",
        "enable-tftp",
        f"tftp-root={plan.tftp_root}",
    ]


def _boot_lines(plan: PxePlan) -> list[str]:
    """Who gets what: tags from the user and vendor classes, then the boot files."""
    lines = [
        "# iPXE (user class iPXE) gets the chain script over HTTP; every other PXE client",
        "# gets an iPXE build over TFTP for its architecture (option 93).",
        "dhcp-userclass=set:ipxe,iPXE",
    ]
    if plan.chainload_ipxe_rom:
        lines += [
            "# PXE_CHAINLOAD_IPXE_ROM: a BIOS iPXE ROM is given undionly.kpxe first",
            f"dhcp-vendorclass=set:biosrom,{BIOS_ROM_VENDOR_CLASS}",
            "tag-if=set:firststage,tag:biosrom",
        ]
    lines += [
        "tag-if=set:firststage,tag:!ipxe",
        "tag-if=set:chain,tag:!firststage",
        # The next-server address makes iPXE take this answer as it is, without a
        # ProxyDHCP request to port 4011, whose answer (without one) it would refuse.
        f"dhcp-boot=tag:chain,{plan.chain_url},,{plan.address.ip}",
    ]
    lines += [
        f'pxe-service=tag:firststage,{boot.arch},"provisioner: iPXE for {boot.label}",{boot.name}'
        for boot in plan.boot_files
    ]
    lines += [f"# no iPXE build for {label} in {plan.tftp_root}" for label in plan.missing]
    return [*lines, ""]

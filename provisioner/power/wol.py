"""Wake-on-LAN: the magic packet (6 x 0xFF, then the MAC 16 times) as one UDP datagram.

The address is the LAN's broadcast address (``192.168.1.255``), optionally with a port
(``:9`` by default; ``:7`` is the other common one). The server must sit on that LAN, or a
router must forward directed broadcasts. There is no answer: the machine cannot say whether
it woke, so ``status`` is unsupported and ``on`` succeeds once the packet is sent.
"""

import socket

from provisioner.power.base import Deadline
from provisioner.power.base import PowerError
from provisioner.power.base import Target

DEFAULT_PORT = 9


def magic_packet(mac_address: str) -> bytes:
    """The packet that wakes the machine with this MAC address."""
    mac = bytes.fromhex(mac_address.replace(":", "").replace("-", ""))
    if len(mac) != 6:
        raise PowerError(f"not a MAC address: {mac_address!r}", "error")
    return b"\xff" * 6 + mac * 16


def split_address(address: str) -> tuple[str, int]:
    """``host`` or ``host:port`` as (host, port)."""
    host, _, port = address.partition(":")
    return host, int(port) if port else DEFAULT_PORT


class WakeOnLan:
    """Sends the magic packet; nothing else is possible."""

    can_query = False

    def __init__(self, target: Target) -> None:
        self.target = target

    def power_on(self, deadline: Deadline) -> None:
        host, port = split_address(self.target.address)
        packet = magic_packet(self.target.mac_address)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.settimeout(deadline.left())
                sock.sendto(packet, (host, port))
        except OSError as exc:
            raise PowerError(
                f"cannot send the magic packet to {host}:{port}: {exc.strerror or exc}",
                "unreachable",
            ) from None

    def _unsupported(self, *args: object) -> None:
        raise PowerError("Wake-on-LAN can only power a machine on", "unsupported")

    power_off = reset = _unsupported

    def pxe_once(self, deadline: Deadline) -> None:
        """Nothing to send: the machine's firmware must list the network first."""

    def status(self, deadline: Deadline) -> str:
        self._unsupported()
        return "unknown"

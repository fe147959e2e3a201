"""What every power driver offers, the errors it raises and the actions built on them."""

import time
from dataclasses import dataclass
from dataclasses import field
from typing import Protocol

#: What an operator may ask for. ``netboot`` is what a hands-off reinstall does: boot from
#: the network once, then power-cycle (or power on a machine that is off).
ACTIONS = ("on", "off", "cycle", "status", "pxe", "netboot")
DRIVERS = ("manual", "ipmi", "redfish", "wol")

#: What each driver can do; Wake-on-LAN can only wake a machine (and hope it netboots).
SUPPORTED: dict[str, frozenset[str]] = {
    "manual": frozenset(),
    "ipmi": frozenset(ACTIONS),
    "redfish": frozenset(ACTIONS),
    "wol": frozenset({"on", "netboot"}),
}


class PowerError(Exception):
    """A power action failed; ``kind`` says how (never with a credential in the message).

    Kinds: ``unreachable`` (no answer), ``timeout`` (no answer in time), ``auth`` (the BMC
    refused the credentials), ``unsupported`` and ``error`` (anything else the BMC said).
    """

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """One node's power settings with its password decrypted: kept in memory only."""

    driver: str
    address: str
    username: str | None
    password: str | None = field(repr=False)
    mac_address: str
    uefi: bool = False


class Deadline:
    """The time left for one action, shared by every request the action makes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; a ``timeout`` PowerError once none are."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise PowerError(f"no answer within {self.seconds:g} s", "timeout")
        return left


class Driver(Protocol):
    """The five primitives; ``perform`` builds the actions from them.

    ``can_query`` is false for a driver that cannot read the power state (Wake-on-LAN):
    its cycle and netboot are a plain power-on.
    """

    can_query: bool

    def power_on(self, deadline: Deadline) -> None: ...

    def power_off(self, deadline: Deadline) -> None: ...

    def reset(self, deadline: Deadline) -> None: ...

    def status(self, deadline: Deadline) -> str: ...

    def pxe_once(self, deadline: Deadline) -> None: ...


def perform(driver: Driver, action: str, deadline: Deadline) -> str | None:
    """Carry out ``action``; return the power state it leaves ("on", "off") when known."""
    if action == "on":
        driver.power_on(deadline)
        return "on"
    if action == "off":
        driver.power_off(deadline)
        return "off"
    if action == "status":
        return driver.status(deadline)
    if action == "pxe":
        driver.pxe_once(deadline)
        return None
    if action == "netboot":
        driver.pxe_once(deadline)
    if action in ("cycle", "netboot"):
        # A reset does nothing to a machine that is off: power it on instead.
        if driver.can_query and driver.status(deadline) == "on":
            driver.reset(deadline)
        else:
            driver.power_on(deadline)
        return "on"
    raise PowerError(f"unknown action {action!r}", "unsupported")


def scrub(message: str, *secrets: str | None) -> str:
    """``message`` with every non-empty secret replaced, in case a library echoed one."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message

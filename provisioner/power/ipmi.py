"""IPMI over LAN (lanplus) through ``ipmitool``, the tool Ironic's ``ipmi`` driver drives.

Why ipmitool and not pyghmi: each call is a process that ``subprocess.run(timeout=...)``
can kill, so an action is bounded however the BMC misbehaves, where pyghmi keeps shared
sessions in a thread of its own; and pyghmi 1.6's client fails against virtualbmc (it
offers SHA-256 in RAKP, the server answers SHA-1), the BMC this project tests against.
The password goes to ipmitool in its environment (``-E``), never on its command line,
where any local user could read it in ``ps``.
"""

import os
import shutil
import subprocess

from provisioner.power.base import Deadline
from provisioner.power.base import PowerError
from provisioner.power.base import Target
from provisioner.power.base import scrub

DEFAULT_PORT = 623
#: Seconds ipmitool waits for one answer, and how often it asks again, within the deadline.
TRY_SECONDS = 2
RETRIES = 2

#: What ipmitool prints when the BMC refuses the user name or the password.
AUTH_HINTS = (
    # "no response from RAKP 1": the BMC answered until it saw the user name, then went quiet.
    "rakp",
    "hmac is invalid",
    "unauthorized name",
    "invalid user name",
    "insufficient resources for session",
    "invalid authentication",
    "unauthorized role",
    "invalid password",
    "rakp 2 message indicates an error",
)


def split_address(address: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, int(port)
    return address, DEFAULT_PORT


class Ipmi:
    """One BMC, reached with ipmitool -I lanplus."""

    can_query = True

    def __init__(self, target: Target, ipmitool: str = "ipmitool") -> None:
        self.target = target
        self.ipmitool = ipmitool

    def _run(self, deadline: Deadline, *command: str) -> str:
        host, port = split_address(self.target.address)
        tool = shutil.which(self.ipmitool)
        if tool is None:
            raise PowerError("ipmitool is not installed on the server (Debian: ipmitool)")
        # -v: say which step of the session setup failed (bad credentials or no answer).
        args = [tool, "-v", "-I", "lanplus", "-H", host, "-p", str(port)]
        args += ["-U", self.target.username or ""]
        args += ["-E"] if self.target.password else ["-P", ""]
        args += ["-N", str(TRY_SECONDS), "-R", str(RETRIES), *command]
        env = {"PATH": os.environ.get("PATH", ""), "IPMI_PASSWORD": self.target.password or ""}
        try:
            done = subprocess.run(
                args,
                env=env,
                capture_output=True,
                text=True,
                timeout=deadline.left(),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise PowerError(
                f"the BMC at {host}:{port} gave no answer within {deadline.seconds:g} s",
                "timeout",
            ) from None
        if done.returncode == 0:
            return done.stdout
        raise self._error(host, port, done.stderr or done.stdout)

    def _error(self, host: str, port: int, output: str) -> PowerError:
        lines = [line for line in output.splitlines() if not line.startswith("Loading IANA")]
        said = scrub(" ".join(" ".join(lines).split())[:300], self.target.password)
        lowered = said.lower()
        if any(hint in lowered for hint in AUTH_HINTS):
            return PowerError(
                f"the BMC at {host}:{port} refused the user name or password ({said})", "auth"
            )
        if "unable to establish" in lowered or "auth capabilities" in lowered:
            return PowerError(f"no answer from the BMC at {host}:{port} ({said})", "unreachable")
        return PowerError(f"the BMC at {host}:{port} said: {said}")

    def power_on(self, deadline: Deadline) -> None:
        self._run(deadline, "power", "on")

    def power_off(self, deadline: Deadline) -> None:
        self._run(deadline, "power", "off")

    def reset(self, deadline: Deadline) -> None:
        self._run(deadline, "power", "reset")

    def status(self, deadline: Deadline) -> str:
        output = self._run(deadline, "power", "status").strip().lower()
        # "Chassis Power is on"
        return "on" if output.endswith(" on") else "off" if output.endswith(" off") else "unknown"

    def pxe_once(self, deadline: Deadline) -> None:
        # Without options=persistent the boot device holds for the next boot only.
        options = ["options=efiboot"] if self.target.uefi else []
        self._run(deadline, "chassis", "bootdev", "pxe", *options)

"""Redfish through sushy, OpenStack's Redfish client (what Ironic's ``redfish`` driver uses).

The address is the system's URL (``https://bmc.example/redfish/v1/Systems/1``), or just the
BMC's root URL when it manages a single system. Authentication is HTTP Basic, on every
request, over TLS that is verified unless ``POWER_REDFISH_VERIFY_TLS = false``.
"""

from urllib.parse import urlsplit

import sushy
from sushy import auth as sushy_auth
from sushy import exceptions as sushy_errors

from provisioner.power.base import Deadline
from provisioner.power.base import PowerError
from provisioner.power.base import Target
from provisioner.power.base import scrub

SYSTEMS = "/redfish/v1/Systems/"


def split_url(address: str) -> tuple[str, str | None]:
    """The BMC's base URL and the system's path (None: the only system)."""
    parts = urlsplit(address)
    base = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return base, path if path.startswith(SYSTEMS) else None


class Redfish:
    """One ComputerSystem of one Redfish service."""

    can_query = True

    def __init__(self, target: Target, verify_tls: bool = True) -> None:
        self.target = target
        self.verify_tls = verify_tls

    def _system(self, deadline: Deadline):
        base, system_path = split_url(self.target.address)
        left = deadline.left()
        conn = sushy.Sushy(
            base,
            auth=sushy_auth.BasicAuth(self.target.username or "", self.target.password or ""),
            verify=self.verify_tls,
            read_timeout=left,
            connect_timeout=min(left, 5.0),
            # One try: the action's deadline, not sushy's retries, bounds the wait.
            server_side_retries=1,
            server_side_retries_delay=0.1,
        )
        return conn.get_system(system_path)

    def _call(self, deadline: Deadline, what):
        """Run ``what(system)``, turning sushy's errors into PowerErrors."""
        where = self.target.address
        try:
            return what(self._system(deadline))
        except sushy_errors.AccessError:
            raise PowerError(
                f"the Redfish service at {where} refused the user name or password", "auth"
            ) from None
        except sushy_errors.ConnectionError as exc:
            text = str(exc).lower()
            kind = "timeout" if "timed out" in text or "timeout" in text else "unreachable"
            raise PowerError(f"no answer from the Redfish service at {where}", kind) from None
        except sushy_errors.SushyError as exc:
            said = scrub(" ".join(str(exc).split())[:300], self.target.password)
            raise PowerError(f"the Redfish service at {where} said: {said}") from None

    def power_on(self, deadline: Deadline) -> None:
        self._call(deadline, lambda system: system.reset_system(sushy.RESET_TYPE_ON))

    def power_off(self, deadline: Deadline) -> None:
        self._call(deadline, lambda system: system.reset_system(sushy.RESET_TYPE_FORCE_OFF))

    def reset(self, deadline: Deadline) -> None:
        self._call(deadline, lambda system: system.reset_system(sushy.RESET_TYPE_FORCE_RESTART))

    def status(self, deadline: Deadline) -> str:
        state = self._call(deadline, lambda system: system.power_state)
        if state in (sushy.POWER_STATE_ON, sushy.POWER_STATE_POWERING_ON):
            return "on"
        if state in (sushy.POWER_STATE_OFF, sushy.POWER_STATE_POWERING_OFF):
            return "off"
        return "unknown"

    def pxe_once(self, deadline: Deadline) -> None:
        mode = sushy.BOOT_SOURCE_MODE_UEFI if self.target.uefi else None
        self._call(
            deadline,
            lambda system: system.set_system_boot_options(
                target=sushy.BOOT_SOURCE_TARGET_PXE,
                enabled=sushy.BOOT_SOURCE_ENABLED_ONCE,
                mode=mode,
            ),
        )

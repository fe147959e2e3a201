"""IP address parsing: one canonical text, and only zone ids that are plain interface names."""

import ipaddress
import re
from functools import lru_cache

# Python's ipaddress accepts any text after "%" as an IPv6 zone id ("fe80::1%eth0$(reboot)"),
# and an address may end up in an install config, so a zone is held to what interface names
# and numeric zone indices look like. \Z, not $: "$" would let a trailing newline through.
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")


class InvalidIP(ValueError):
    """The text is not an IP address in an accepted form."""


@lru_cache(maxsize=4096)  # peer addresses repeat on every boot; the function is pure
def normalize_ip(text: str) -> str:
    """Return ``text`` as a canonical IPv4 or IPv6 address; a zone id must be plain."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidIP(f"Not a valid IP address: {text[:60]!r}") from None
    zone = getattr(address, "scope_id", None)
    if zone is not None and not _ZONE.match(zone):
        raise InvalidIP(
            f"Not a valid IP address: {text[:60]!r} (a zone id is an interface name: "
            "letters, digits, '.', '_', '-', at most 15)"
        )
    return str(address)


def valid_ip_or_none(text: str | None) -> str | None:
    """``text`` in canonical form, or None when it is not an acceptable address."""
    if not text:
        return None
    try:
        return normalize_ip(text)
    except InvalidIP:
        return None

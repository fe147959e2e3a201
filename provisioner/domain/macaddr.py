"""MAC address parsing: one canonical form, ``aa:bb:cc:dd:ee:ff``."""

import re
from functools import lru_cache

_SEPARATED = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_BARE = re.compile(r"^[0-9a-f]{12}$")


class InvalidMac(ValueError):
    """The text is not a MAC address in an accepted form."""


#: Boots parse the same few hundred MACs over and over; the functions are pure.
PARSED_CACHE_SIZE = 4096


@lru_cache(maxsize=PARSED_CACHE_SIZE)
def normalize_mac(text: str) -> str:
    """Return ``text`` as lower-case colon-separated MAC; accept ``:``, ``-`` or bare hex."""
    value = text.strip().lower()
    if _SEPARATED.match(value):
        return value.replace("-", ":")
    if _BARE.match(value):
        return ":".join(value[i : i + 2] for i in range(0, 12, 2))
    raise InvalidMac(
        f"Not a valid MAC address: {text[:40]!r} "
        "(expected aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff)"
    )


def looks_like_mac(text: str) -> bool:
    """Tell whether ``text`` parses as a MAC address."""
    try:
        normalize_mac(text)
    except InvalidMac:
        return False
    return True


#: Addresses no network card has: frames to them go to many machines, or to none.
_NOT_A_MACHINE = {
    "00:00:00:00:00:00": "the all-zero address",
    "ff:ff:ff:ff:ff:ff": "the broadcast address",
}


@lru_cache(maxsize=PARSED_CACHE_SIZE)
def machine_mac(text: str) -> str:
    """Return ``text`` as a canonical MAC, refusing addresses no single machine owns:
    all zeros, broadcast and multicast (the low bit of the first octet set)."""
    mac = normalize_mac(text)
    kind = _NOT_A_MACHINE.get(mac) or ("a multicast address" if int(mac[:2], 16) & 1 else None)
    if kind is not None:
        raise InvalidMac(f"{mac} is {kind}, not the address of a machine's network card")
    return mac

"""IP address parsing on its own: one canonical text, and only zone ids that look like an
interface name (an address may be printed into an install config). Through the schemas:
tests/unit/test_schemas.py; stored through the API: tests/api/test_node_field_validation.py."""

import pytest
from hostile import HOSTILE_IPS
from hostile import HOSTILE_TEXT

from provisioner.domain.ipaddr import InvalidIP
from provisioner.domain.ipaddr import normalize_ip
from provisioner.domain.ipaddr import valid_ip_or_none

CANONICAL = [
    ("192.0.2.7", "192.0.2.7"),
    ("10.0.0.1", "10.0.0.1"),
    ("::1", "::1"),
    ("2001:DB8::1", "2001:db8::1"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("FE80::1%eth0.100", "fe80::1%eth0.100"),
    ("fe80::1%enp0s31f6", "fe80::1%enp0s31f6"),
    ("fe80::1%2", "fe80::1%2"),
    ("fe80::1%wlan_0-a", "fe80::1%wlan_0-a"),
    ("fe80::1%" + "e" * 15, "fe80::1%" + "e" * 15),
    ("::ffff:192.0.2.1", "::ffff:c000:201"),
]
NOT_ADDRESSES = {
    **HOSTILE_IPS,
    **{f"text-{name}": value for name, value in HOSTILE_TEXT.items()},
    "empty": "",
    "ipv4-too-big": "192.0.2.256",
    "ipv4-short": "192.0.2",
    "ipv4-leading-zero": "192.0.2.01",
    "ipv4-space": " 192.0.2.1",
    "ipv4-zone": "192.0.2.1%eth0",
    "host-name": "node-1.lab",
    "cidr": "192.0.2.0/24",
    "ipv6-bracketed": "[fe80::1]",
    "ipv6-with-port": "[::1]:8080",
}


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_an_address_loads_in_canonical_form(text, canonical):
    assert normalize_ip(text) == canonical
    assert valid_ip_or_none(text) == canonical


@pytest.mark.parametrize("text", NOT_ADDRESSES.values(), ids=NOT_ADDRESSES)
def test_anything_else_is_refused_quoting_the_text(text):
    with pytest.raises(InvalidIP, match="Not a valid IP address"):
        normalize_ip(text)
    assert valid_ip_or_none(text) is None


def test_a_long_text_is_quoted_cut_short():
    with pytest.raises(InvalidIP) as info:
        normalize_ip("x" * 500)
    assert len(str(info.value)) < 120


def test_no_address_is_none():
    assert valid_ip_or_none(None) is None

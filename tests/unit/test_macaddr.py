"""MAC address parsing: every accepted form becomes ``aa:bb:cc:dd:ee:ff``; nothing else passes."""

import pytest

from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import looks_like_mac
from provisioner.domain.macaddr import machine_mac
from provisioner.domain.macaddr import normalize_mac

CANONICAL = "52:54:00:ab:cd:ef"


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:ab:cd:ef",
        "52-54-00-ab-cd-ef",
        "525400abcdef",
        "52:54:00:AB:CD:EF",
        "52-54-00-AB-CD-EF",
        "525400ABCDEF",
        "52:54:00:Ab:cD:eF",
    ],
)
def test_accepted_forms_normalise(text):
    """Colons, dashes, bare hex and upper case all give the canonical form."""
    assert normalize_mac(text) == CANONICAL
    assert looks_like_mac(text)


def test_canonical_form_is_unchanged():
    """Normalising is idempotent."""
    assert normalize_mac(normalize_mac("00-11-22-33-44-55")) == "00:11:22:33:44:55"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "525400abcde",
        "525400abcdef0",
        "52:54:00:ab:cd:e",
        "52:54:00:ab:cd:eff",
        "5:254:00:ab:cd:ef",
        "52:54-00:ab:cd:ef",
        "52-54:00-ab:cd-ef",
        "52:54:00:ab:cd-ef",
        "52.54.00.ab.cd.ef",
        "5254.00ab.cdef",
        "52 54 00 ab cd ef",
        "52:54:00:ab:cd:eg",
        "zzzzzzzzzzzz",
        "52:54:00:ab:cd:ef; exit",
        "0x525400abcdef",
    ],
)
def test_rejected_forms(text):
    """Wrong length, mixed or odd separators and non-hex digits are refused."""
    with pytest.raises(InvalidMac):
        normalize_mac(text)
    assert not looks_like_mac(text)


def test_invalid_mac_is_a_value_error_quoting_the_text():
    """The error is a ``ValueError`` whose message shows what was given."""
    with pytest.raises(ValueError, match="not-a-mac"):
        normalize_mac("not-a-mac")


# -- addresses no machine owns -------------------------------------------------------------------

#: What ``machine_mac`` says each is, in every accepted form.
NOT_A_MACHINE = {
    "00:00:00:00:00:00": "the all-zero address",
    "ff:ff:ff:ff:ff:ff": "the broadcast address",
    "01:00:5e:00:00:fb": "a multicast address",  # IPv4 multicast (mDNS)
    "33:33:00:00:00:01": "a multicast address",  # IPv6 multicast
    "03:00:00:00:00:00": "a multicast address",
    "01:80:c2:00:00:00": "a multicast address",  # spanning tree
    "ab:cd:ef:01:23:45": "a multicast address",  # odd first octet
}


def forms(mac: str) -> list[str]:
    """The canonical form, upper case with dashes, and bare hex."""
    return [mac, mac.upper().replace(":", "-"), mac.replace(":", "")]


@pytest.mark.parametrize(
    ("text", "kind"),
    [(form, kind) for mac, kind in NOT_A_MACHINE.items() for form in forms(mac)],
)
def test_an_address_no_machine_owns_is_refused_saying_what_it_is(text, kind):
    with pytest.raises(InvalidMac) as info:
        machine_mac(text)
    assert str(info.value) == (
        f"{normalize_mac(text)} is {kind}, not the address of a machine's network card"
    )


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:12:34:56",  # QEMU
        "02:00:00:00:00:01",  # locally administered unicast
        "00:00:00:00:00:01",
        "fe:ff:ff:ff:ff:ff",
        "08:00:27:aa:bb:cc",  # VirtualBox
        "AC-DE-48-00-11-22",
    ],
)
def test_a_unicast_address_is_a_machine(text):
    assert machine_mac(text) == normalize_mac(text)


def test_what_is_not_a_mac_is_refused_as_such_first():
    with pytest.raises(InvalidMac, match="Not a valid MAC address"):
        machine_mac("ff:ff:ff:ff:ff")

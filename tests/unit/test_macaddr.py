"""MAC address parsing: every accepted form becomes ``aa:bb:cc:dd:ee:ff``; nothing else passes."""

import pytest

from provisioner.domain.macaddr import InvalidMac
from provisioner.domain.macaddr import looks_like_mac
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

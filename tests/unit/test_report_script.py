"""The report script's defaults on their own (``render_report_script``): a MAC or token
that is not one is dropped, the same script as without it; the URL is shell-quoted. Served
and run by dash and busybox: tests/api/test_report_script.py."""

import shlex

import pytest
from hostile import HOSTILE_SCRIPT_VALUES

from provisioner.domain.report_script import render_report_script

URL = "http://prov.test:8080/api/v1/report"
MAC = "52:54:00:5c:00:01"
TOKEN = "Abc-123_xyz"


def defaults_to(script: str, name: str, value: str) -> bool:
    """Whether the script sets ``name`` from ``PROVISIONER_<name>``, else from ``value``."""
    return f"{name}=${{PROVISIONER_{name}:-{value}}}" in script.splitlines()


@pytest.mark.parametrize("value", HOSTILE_SCRIPT_VALUES, ids=range(len(HOSTILE_SCRIPT_VALUES)))
@pytest.mark.parametrize("param", ["mac", "token"])
def test_a_hostile_mac_or_token_is_dropped(param, value):
    assert render_report_script(report_url=URL, **{param: value}) == render_report_script(
        report_url=URL
    )


@pytest.mark.parametrize("mac", ["52-54-00-5c-00-01", "5254005c0001", "52:54:00:5c:00", "zz"])
def test_a_mac_in_another_form_is_dropped(mac):
    assert render_report_script(report_url=URL, mac=mac) == render_report_script(report_url=URL)


@pytest.mark.parametrize("mac", [MAC, MAC.upper()])
def test_a_mac_is_baked_in_lower_case(mac):
    assert defaults_to(render_report_script(report_url=URL, mac=mac), "MAC", MAC)


@pytest.mark.parametrize("token", [TOKEN, "x" * 128, "-"])
def test_a_token_is_baked_in(token):
    script = render_report_script(report_url=URL, token=token)
    assert defaults_to(script, "TOKEN", shlex.quote(token))


@pytest.mark.parametrize(
    "url", [URL, "http://prov.test:8080/a b'c$(touch PWNED)`touch PWNED2`", "http://x/;id"]
)
def test_the_report_url_is_a_single_quoted_word(url):
    script = render_report_script(report_url=url)
    assert defaults_to(script, "REPORT_URL", shlex.quote(url))

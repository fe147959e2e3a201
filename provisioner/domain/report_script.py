"""The ``provisioner-report`` shell helper, served with this server's defaults filled in."""

import re
import shlex
from functools import cache
from importlib.resources import files

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{0,128}\Z")
_MAC = re.compile(r"^(([0-9a-f]{2}:){5}[0-9a-f]{2})?\Z")


@cache
def _template() -> str:
    return files("provisioner").joinpath("scripts/report.sh").read_text(encoding="utf-8")


def _quoted(value: str) -> str:
    """A value placed in ``${VAR:-value}``: shell-quoted, so it can never run as code."""
    return shlex.quote(value) if value else ""


def render_report_script(*, report_url: str, mac: str = "", token: str = "") -> str:
    """The script, defaulting to ``report_url`` and, when given, this node's MAC and token.

    Values that do not look like a MAC or a token are left out rather than trusted.
    """
    mac = mac.lower() if _MAC.match(mac.lower()) else ""
    token = token if _TOKEN.match(token) else ""
    return (
        _template()
        .replace("__REPORT_URL__", _quoted(report_url))
        .replace("__MAC__", _quoted(mac))
        .replace("__TOKEN__", _quoted(token))
    )

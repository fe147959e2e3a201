"""Escaping of values rendered into install configs: the Jinja filters and the default guard.

A value's context changes inside one file (a kickstart holds shell sections, a cloud-config
holds shell commands), so no escaping can be chosen from a template's file type. Instead:

- every ``{{ value }}`` a template prints without an escaping filter is *guarded*: a
  character outside ``PLAIN`` (letters, digits, ``. _ : / @ + % - [ ]``) becomes ``_``, so
  the value is inert in any of these files, quoted or not; validated node fields (hostname,
  IP address, MAC, ids, tokens) are plain and print unchanged;
- an escaping filter prints any value exactly, for one context: ``sh`` (a shell word), ``ks``
  (a kickstart command argument), ``yaml`` (a YAML scalar), ``preseed`` (a preseed value).
  Filters compose from the inside out: ``{{ hostname | sh | preseed }}`` is a shell word
  inside a preseed ``*_command``.
"""

import logging
import re
import shlex
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context

log = logging.getLogger(__name__)

PLAIN = re.compile(r"[^A-Za-z0-9._:/@+%\[\]-]")
# C0 and C1 control characters, DEL and Unicode line/paragraph separators: a line break
# in any of them ends a kickstart or preseed line, or a shell command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_PRESEED_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def inert(text: str) -> str:
    """``text`` with every character outside ``PLAIN`` replaced by ``_``."""
    return PLAIN.sub("_", text)


class Escaped(str):
    """Text an escaping filter produced: the guard prints it as it is."""


def shell_word(value: Any) -> Escaped:
    """One POSIX shell word, single-quoted; control characters (newlines) become ``_``."""
    return Escaped(shlex.quote(_CONTROL.sub("_", str(value))))


def yaml_scalar(value: Any) -> Escaped:
    """A double-quoted YAML scalar (all ASCII, so no character can start a new line)."""
    return Escaped('"' + "".join(_yaml_char(char) for char in str(value)) + '"')


def _yaml_char(char: str) -> str:
    code = ord(char)
    if char in '"\\':
        return "\\" + char
    if 0x20 <= code <= 0x7E:
        return char
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def preseed_value(value: Any) -> Escaped:
    """A preseed value: one line (a preseed has no quoting), no continuing backslash."""
    return Escaped(_PRESEED_UNSAFE.sub("_", str(value)).strip())


FILTERS = {"sh": shell_word, "ks": shell_word, "yaml": yaml_scalar, "preseed": preseed_value}


@pass_context
def guard(context: Context, value: Any) -> str:
    """Jinja ``finalize``: filtered text as it is; anything else reduced to ``PLAIN``."""
    if isinstance(value, Escaped):
        return value
    text = str(value)
    plain = inert(text)
    if plain != text:
        log.warning(
            "install config %s: a value held characters that are unsafe without an escaping "
            "filter (|sh, |ks, |yaml, |preseed); they were printed as '_'",
            context.name,
        )
    return plain

"""Hostile hostnames and addresses: the cases both the schema unit tests and the API
tests of the node fields feed in (none may reach a rendered file or the database); and the
values given as ``?mac=``/``?token=`` to the report script, none of which may be baked in."""

HOSTILE_TEXT = {
    "newline": "web-1\nreboot",
    "trailing-newline": "web-1\n",
    "carriage-return": "web-1\rreboot",
    "single-quote": "web-1'reboot'",
    "double-quote": 'web-1"reboot"',
    "command-substitution": "web-1$(reboot)",
    "backticks": "web-1`reboot`",
    "semicolon": "web-1;reboot",
    "space": "web-1 reboot",
}
HOSTILE_IPS = {
    "zone-command": "fe80::1%eth0$(reboot)",
    "zone-backticks": "fe80::1%`reboot`",
    "zone-newline": "fe80::1%eth0\nreboot",
    "zone-trailing-newline": "fe80::1%eth0\n",
    "zone-quotes": "fe80::1%eth0'\"",
    "zone-space": "fe80::1%eth0 reboot",
    "zone-semicolon": "fe80::1%eth0;reboot",
    "zone-too-long": "fe80::1%" + "e" * 16,
    "zone-empty": "fe80::1%",
    "ipv4-newline": "192.0.2.1\n",
}
#: Not a MAC nor a token: each must be dropped from the served report script.
HOSTILE_SCRIPT_VALUES = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "x}; touch PWNED; #",
    "a b",
    "line\nbreak",
    "${HOME}",
    "\\",
    "x" * 129,
    "52:54:00:5c:00:01\n",  # a well-formed value with a trailing newline
    "token-with-a-trailing-newline\n",
]

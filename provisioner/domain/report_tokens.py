"""Per-install report tokens: minted when the installer is served, checked on every report.

Only the SHA-256 of a token is stored. The token of the previous install attempt is kept
too, so that an installer that finishes late is recognised (and its report recorded as
stale) rather than refused.
"""

import hmac
from enum import Enum

from sqlalchemy import Row

from provisioner.domain.tokens import new_token
from provisioner.domain.tokens import token_hash
from provisioner.models import Node

#: Compared against when the node is unknown, so timing does not reveal whether it exists.
_DUMMY_HASH = token_hash("no such node")


class TokenMatch(Enum):
    CURRENT = "current"
    PREVIOUS = "previous"
    NONE = "none"


def install_report_token(node: Node, token: str) -> None:
    """Make ``token`` the node's report token; the one it replaces stays valid as stale."""
    node.previous_report_token_hash = node.report_token_hash
    node.report_token_hash = token_hash(token)


def mint_report_token(node: Node) -> str:
    """Give ``node`` a fresh report token (returned once, stored hashed)."""
    token = new_token()
    install_report_token(node, token)
    return token


def match_report_token(node: "Node | Row | None", token: str | None) -> TokenMatch:
    """Which of the node's tokens ``token`` is, compared in constant time."""
    candidate = token_hash(token or "")
    current = (node.report_token_hash if node else None) or _DUMMY_HASH
    previous = (node.previous_report_token_hash if node else None) or _DUMMY_HASH
    is_current = hmac.compare_digest(candidate, current)
    is_previous = hmac.compare_digest(candidate, previous)
    if token is None or node is None:
        return TokenMatch.NONE
    if is_current and node.report_token_hash:
        return TokenMatch.CURRENT
    if is_previous and node.previous_report_token_hash:
        return TokenMatch.PREVIOUS
    return TokenMatch.NONE

"""Secrets: making tokens, hashing them, and comparing them in constant time.

Tokens are never logged. Configured operator tokens may be written as plain text or as
``sha256:<hex>``; report tokens are stored only as their SHA-256.
"""

import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
HASH_PREFIX = "sha256:"


def new_token() -> str:
    """A fresh random token (32 bytes from ``secrets``, URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """The hex SHA-256 of ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def stored_form(configured: str) -> str:
    """A configured token as the hex digest it is compared by."""
    if configured.startswith(HASH_PREFIX):
        return configured[len(HASH_PREFIX) :].lower()
    return token_hash(configured)


def matches_any(presented: str | None, digests: list[str]) -> bool:
    """Tell whether ``presented`` hashes to one of ``digests``, comparing every one of them
    in constant time so the answer's timing says nothing about which (or how close)."""
    candidate = token_hash(presented or "")
    found = False
    for digest in digests:
        found |= hmac.compare_digest(candidate, digest)
    return found and presented is not None

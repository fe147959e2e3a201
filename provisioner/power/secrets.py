"""The key that encrypts BMC passwords at rest, kept outside the database.

``POWER_KEY`` (a Fernet key in the config or environment) wins; else ``POWER_KEY_FILE``;
else ``power.key`` in the data directory, created (mode 0600) on first use. A database dump
alone then yields only Fernet tokens, never a password.
"""

import os
from pathlib import Path

from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken


class PowerSecretError(Exception):
    """The key is unusable, or a stored password cannot be decrypted with it."""


def key_file(setting: str, data_dir: str) -> Path:
    """The key file's path: the setting (relative to the data directory), or ``power.key``."""
    path = Path(setting) if setting else Path("power.key")
    return path if path.is_absolute() else Path(data_dir) / path


def load_key(key: str, key_file_setting: str, data_dir: str) -> bytes:
    """The Fernet key from the setting, or from its file (created when it is the default)."""
    if key:
        return key.strip().encode()
    path = key_file(key_file_setting, data_dir)
    if not path.exists() and not key_file_setting:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker made it first
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(Fernet.generate_key())
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise PowerSecretError(f"POWER_KEY_FILE {path}: {exc.strerror}") from None


class PasswordBox:
    """Encrypts and decrypts BMC passwords with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except ValueError:
            raise PowerSecretError(
                "the power key is not a Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    def seal(self, password: str) -> str:
        """The password as a Fernet token (text)."""
        return self._fernet.encrypt(password.encode()).decode("ascii")

    def open(self, token: str) -> str:
        """The password back; a clear error if the key changed since it was sealed."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken:
            raise PowerSecretError(
                "the stored BMC password cannot be decrypted with the current power key "
                "(was POWER_KEY or the key file changed?): set the password again"
            ) from None

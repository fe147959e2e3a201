"""Operator token settings (``API_TOKENS``, ``READ_TOKENS``) on their own: a bad entry is a
``ConfigError`` naming the key and never echoing the value, which may be a secret. That
``create_app`` stops on one, and what the tokens let in: tests/api/test_auth.py."""

import hashlib

import pytest

from provisioner.config import ConfigError
from provisioner.config import load_settings

SECRET_LOOKING = "Secr3t-value-that-must-not-be-echoed"
TOKEN = "api-token-0123456789abcdef"


@pytest.mark.parametrize("key", ["API_TOKENS", "READ_TOKENS"])
@pytest.mark.parametrize(
    "value",
    [
        ["short-Secr3t"],
        [""],
        ["sha256:" + "ab" * 10],
        ["sha256:" + "a" * 63],
        ["sha256:" + "a" * 65],
        ["sha256:" + "z" * 64],
        [SECRET_LOOKING, 12345],
        {"token": SECRET_LOOKING},
    ],
    ids=[
        "too-short",
        "empty",
        "sha256-short",
        "sha256-63",
        "sha256-65",
        "sha256-not-hex",
        "not-a-string",
        "not-a-list",
    ],
)
def test_bad_token_config_is_a_config_error_naming_the_key_but_not_the_value(tmp_path, key, value):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(str(tmp_path), {key: value}, environ={})

    message = str(excinfo.value)
    assert key in message
    for item in value if isinstance(value, list) else [value["token"]]:
        if isinstance(item, str) and item:
            assert item not in message
            assert item.removeprefix("sha256:") not in message
    assert "Secr3t" not in message


@pytest.mark.parametrize("key", ["API_TOKENS", "READ_TOKENS"])
@pytest.mark.parametrize(
    "value",
    [
        [],
        [TOKEN],
        [TOKEN, TOKEN + "-2"],
        ["sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()],
        ["sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest().upper()],
    ],
    ids=["none", "one", "two", "sha256", "sha256-upper"],
)
def test_good_token_config_loads(tmp_path, key, value):
    assert len(load_settings(str(tmp_path), {key: value}, environ={})[key]) == len(value)

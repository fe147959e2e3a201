"""Configuration rules: defaults, the TOML file, environment overrides, test overrides and
errors naming the key, on ``load_settings`` and the path helpers (no app). How ``create_app``
and the console script apply them: tests/api/test_config.py."""

from pathlib import Path

import pytest
from paths import REPO_ROOT

from provisioner.config import CHECKOUT_WORKFLOWS
from provisioner.config import DEFAULTS
from provisioner.config import ConfigError
from provisioner.config import database_uri
from provisioner.config import default_data_dir
from provisioner.config import load_settings
from provisioner.config import workflows_dir


def write_toml(path: Path, text: str) -> Path:
    """Write a TOML file and return its path."""
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    """With no file and no environment every key has its documented default."""
    settings = load_settings(str(tmp_path), environ={})
    assert settings["DATABASE_URL"] == "sqlite:///provisioner.db"
    assert settings["WORKFLOWS_DIR"] == ""
    assert settings["SERVER_URL"] == ""
    assert settings["AUTO_REGISTER"] is True
    assert settings["INSTALL_TIMEOUT_MINUTES"] == 60
    assert settings["MAX_INSTALL_ATTEMPTS"] == 3
    assert settings["SWEEP_INTERVAL_SECONDS"] == 60
    assert settings["TRUSTED_PROXIES"] == 0
    assert settings["CONFIG_FILE"] is None
    assert {key: settings[key] for key in DEFAULTS} == DEFAULTS


def test_default_database_is_a_sqlite_file_in_the_instance_folder(tmp_path):
    """The default SQLite path is resolved against the instance folder."""
    uri = database_uri(DEFAULTS["DATABASE_URL"], str(tmp_path))
    assert uri == f"sqlite:///{tmp_path / 'provisioner.db'}"


@pytest.mark.parametrize(
    "url",
    ["sqlite:////var/lib/provisioner.db", "sqlite:///:memory:", "postgresql://u@h/db"],
)
def test_absolute_and_server_database_urls_are_kept(tmp_path, url):
    """Only a relative SQLite path is moved into the instance folder."""
    assert database_uri(url, str(tmp_path)) == url


def test_example_config_documents_every_key():
    """``config.example.toml`` parses, uses only known keys and mentions each one."""
    example = REPO_ROOT / "config.example.toml"
    text = example.read_text()
    settings = load_settings("/nonexistent", environ={"PROVISIONER_CONFIG": str(example)})
    for key in DEFAULTS:
        assert key in text, key
    assert settings["CONFIG_FILE"] == str(example)


def test_file_named_by_provisioner_config(tmp_path):
    """``PROVISIONER_CONFIG`` names the TOML file to read."""
    path = write_toml(
        tmp_path / "custom.toml",
        'SERVER_URL = "http://10.0.0.1:8080"\nMAX_INSTALL_ATTEMPTS = 5\nAUTO_REGISTER = false\n',
    )
    settings = load_settings(str(tmp_path / "instance"), environ={"PROVISIONER_CONFIG": str(path)})
    assert settings["SERVER_URL"] == "http://10.0.0.1:8080"
    assert settings["MAX_INSTALL_ATTEMPTS"] == 5
    assert settings["AUTO_REGISTER"] is False
    assert settings["INSTALL_TIMEOUT_MINUTES"] == 60
    assert settings["CONFIG_FILE"] == str(path)


def test_instance_config_toml_is_read_when_present(tmp_path):
    """Without ``PROVISIONER_CONFIG``, ``instance/config.toml`` is used if it exists."""
    write_toml(tmp_path / "config.toml", "TRUSTED_PROXIES = 2\n")
    settings = load_settings(str(tmp_path), environ={})
    assert settings["TRUSTED_PROXIES"] == 2
    assert settings["CONFIG_FILE"] == str(tmp_path / "config.toml")


def test_provisioner_config_wins_over_instance_file(tmp_path):
    """An explicit file replaces ``instance/config.toml`` rather than merging with it."""
    write_toml(tmp_path / "config.toml", "TRUSTED_PROXIES = 2\nMAX_INSTALL_ATTEMPTS = 9\n")
    chosen = write_toml(tmp_path / "chosen.toml", "MAX_INSTALL_ATTEMPTS = 4\n")
    settings = load_settings(str(tmp_path), environ={"PROVISIONER_CONFIG": str(chosen)})
    assert settings["MAX_INSTALL_ATTEMPTS"] == 4
    assert settings["TRUSTED_PROXIES"] == 0


def test_environment_overrides_file(tmp_path):
    """``PROVISIONER_<KEY>`` beats the value in the file."""
    write_toml(tmp_path / "config.toml", "MAX_INSTALL_ATTEMPTS = 5\nAUTO_REGISTER = true\n")
    environ = {"PROVISIONER_MAX_INSTALL_ATTEMPTS": "7", "PROVISIONER_AUTO_REGISTER": "false"}
    settings = load_settings(str(tmp_path), environ=environ)
    assert settings["MAX_INSTALL_ATTEMPTS"] == 7
    assert settings["AUTO_REGISTER"] is False


def test_test_config_overrides_environment(tmp_path):
    """The mapping given to ``create_app`` beats the environment and the file."""
    write_toml(tmp_path / "config.toml", "MAX_INSTALL_ATTEMPTS = 5\n")
    settings = load_settings(
        str(tmp_path),
        {"MAX_INSTALL_ATTEMPTS": 2},
        environ={"PROVISIONER_MAX_INSTALL_ATTEMPTS": "7"},
    )
    assert settings["MAX_INSTALL_ATTEMPTS"] == 2


@pytest.mark.parametrize(
    ("value", "expected"), [("0.05", 0.05), ("0", 0.0), ("90", 90.0), (" 1.5 ", 1.5)]
)
def test_install_timeout_accepts_a_float_from_the_environment(tmp_path, value, expected):
    """``PROVISIONER_INSTALL_TIMEOUT_MINUTES=0.05`` is a float; 0 (disabled) is allowed."""
    environ = {"PROVISIONER_INSTALL_TIMEOUT_MINUTES": value}
    settings = load_settings(str(tmp_path), environ=environ)
    assert settings["INSTALL_TIMEOUT_MINUTES"] == pytest.approx(expected)
    assert isinstance(settings["INSTALL_TIMEOUT_MINUTES"], float)


def test_install_timeout_accepts_a_float_or_int_in_toml(tmp_path):
    """In TOML both ``0.5`` and ``45`` are fine for the timeout."""
    for text, expected in (("0.5", 0.5), ("45", 45.0)):
        write_toml(tmp_path / "config.toml", f"INSTALL_TIMEOUT_MINUTES = {text}\n")
        settings = load_settings(str(tmp_path), environ={})
        assert settings["INSTALL_TIMEOUT_MINUTES"] == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_INSTALL_ATTEMPTS", "many"),
        ("MAX_INSTALL_ATTEMPTS", "0"),
        ("MAX_INSTALL_ATTEMPTS", "2.5"),
        ("INSTALL_TIMEOUT_MINUTES", "soon"),
        ("INSTALL_TIMEOUT_MINUTES", "-1"),
        ("INSTALL_TIMEOUT_MINUTES", "nan"),
        ("INSTALL_TIMEOUT_MINUTES", "inf"),
        ("SWEEP_INTERVAL_SECONDS", "0"),
        ("SWEEP_INTERVAL_SECONDS", "-5"),
        ("TRUSTED_PROXIES", "-1"),
        ("TRUSTED_PROXIES", "one"),
        ("AUTO_REGISTER", "maybe"),
        ("AUTO_REGISTER", ""),
    ],
)
def test_bad_environment_value_names_the_key(tmp_path, key, value):
    """A value that does not parse raises ``ConfigError`` naming its key."""
    with pytest.raises(ConfigError, match=key):
        load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": value})


@pytest.mark.parametrize(
    ("key", "toml_value"),
    [
        ("MAX_INSTALL_ATTEMPTS", "2.5"),
        ("MAX_INSTALL_ATTEMPTS", '"three"'),
        ("MAX_INSTALL_ATTEMPTS", "true"),
        ("INSTALL_TIMEOUT_MINUTES", "-0.5"),
        ("AUTO_REGISTER", '"sometimes"'),
        ("AUTO_REGISTER", "1.5"),
        ("DATABASE_URL", "5"),
        ("SERVER_URL", "[1, 2]"),
        ("WORKFLOWS_DIR", "false"),
    ],
)
def test_bad_file_value_names_the_key(tmp_path, key, toml_value):
    """A wrongly typed or out-of-range value in the file names its key."""
    write_toml(tmp_path / "config.toml", f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError, match=key):
        load_settings(str(tmp_path), environ={})


@pytest.mark.parametrize("key", ["NOT_A_SETTING", "database_url", "Auto_Register"])
def test_unknown_file_key_is_an_error(tmp_path, key):
    """An unknown (or lower-case, which Flask would drop) key is named, not ignored."""
    write_toml(tmp_path / "config.toml", f'{key} = "x"\n')
    with pytest.raises(ConfigError, match=key):
        load_settings(str(tmp_path), environ={})


def test_unparseable_toml_is_a_config_error(tmp_path):
    """A file that is not TOML raises ``ConfigError`` naming the file."""
    write_toml(tmp_path / "config.toml", "MAX_INSTALL_ATTEMPTS = = 3\n[unclosed\n")
    with pytest.raises(ConfigError, match="config.toml"):
        load_settings(str(tmp_path), environ={})


def test_missing_named_file_is_a_config_error(tmp_path):
    """``PROVISIONER_CONFIG`` pointing nowhere is an error, not a silent default."""
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_settings(str(tmp_path), environ={"PROVISIONER_CONFIG": str(missing)})


def test_workflows_dir_default_is_the_instance_folder_or_a_checkouts_examples(tmp_path):
    """Unset, WORKFLOWS_DIR is instance/workflows; while that is missing, in a checkout, the
    checkout's examples (so ``provisioner`` run by hand knows the example workflows)."""
    assert workflows_dir("", str(tmp_path)) == str(CHECKOUT_WORKFLOWS)
    (tmp_path / "workflows").mkdir()
    assert workflows_dir("", str(tmp_path)) == str(tmp_path / "workflows")
    assert workflows_dir("flows", str(tmp_path)) == str(tmp_path / "flows")
    assert workflows_dir("/srv/flows", str(tmp_path)) == "/srv/flows"


def test_data_dir_defaults_to_systemds_state_directory(tmp_path):
    """Under systemd (``StateDirectory=``) the data lives in ``$STATE_DIRECTORY``."""
    state = tmp_path / "state"
    assert default_data_dir({"STATE_DIRECTORY": f"{state}:{tmp_path / 'other'}"}) == state


def test_data_dir_defaults_to_instance_in_a_checkout():
    """Run from a source checkout, the data stays in its ``instance/`` folder, as before."""
    checkout = REPO_ROOT
    assert default_data_dir({}) == checkout / "instance"


# -- every setting by its kind ------------------------------------------------------------------

#: The settings by the kind of their default: each kind is parsed by one rule, and every key
#: of a kind must follow it (a key given the wrong parser fails here).
FLAGS = [key for key, value in DEFAULTS.items() if isinstance(value, bool)]
NUMBERS = [key for key, value in DEFAULTS.items() if type(value) in (int, float)]
WHOLE_NUMBERS = [key for key in NUMBERS if type(DEFAULTS[key]) is int]
#: Values no number setting takes, from the environment: not numbers, not finite, negative.
NOT_A_NUMBER = ["many", "", "nan", "inf", "-inf", "1e999", "-1", "0x10"]


def test_the_kinds_hold_the_settings_the_rules_are_written_for():
    assert {"AUTO_REGISTER", "ACCESS_LOG", "PXE", "BOOT_MENU"} <= set(FLAGS)
    assert {"MAX_INSTALL_ATTEMPTS", "POWER_TIMEOUT_SECONDS", "TRUSTED_PROXIES"} <= set(NUMBERS)


@pytest.mark.parametrize("key", FLAGS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), (" Yes ", True), ("ON", True), ("0", False), ("no", False), ("Off", False)],
)
def test_every_flag_takes_the_usual_spellings_from_the_environment(tmp_path, key, text, expected):
    settings = load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": text})
    assert settings[key] is expected


@pytest.mark.parametrize("key", FLAGS)
@pytest.mark.parametrize("text", ["maybe", "", "2", "enabled"])
def test_every_flag_refuses_other_words_naming_the_key(tmp_path, key, text):
    with pytest.raises(ConfigError, match=f"config key {key}: expected true or false"):
        load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": text})


@pytest.mark.parametrize("key", FLAGS)
@pytest.mark.parametrize("toml_value", ["1", '"sometimes"', "[true]"])
def test_every_flag_in_the_file_is_a_toml_boolean_or_a_word(tmp_path, key, toml_value):
    write_toml(tmp_path / "config.toml", f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_settings(str(tmp_path), environ={})


@pytest.mark.parametrize("key", NUMBERS)
@pytest.mark.parametrize("text", NOT_A_NUMBER)
def test_every_number_refuses_what_is_not_a_finite_non_negative_number(tmp_path, key, text):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": text})


@pytest.mark.parametrize("key", NUMBERS)
@pytest.mark.parametrize("toml_value", ["true", "[5]", "-1"])
def test_every_number_in_the_file_refuses_booleans_lists_and_negatives(tmp_path, key, toml_value):
    write_toml(tmp_path / "config.toml", f"{key} = {toml_value}\n")
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_settings(str(tmp_path), environ={})


@pytest.mark.parametrize("key", NUMBERS)
def test_every_number_takes_a_larger_value_than_its_default_from_the_environment(tmp_path, key):
    value = DEFAULTS[key] * 2 + 1
    settings = load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": f" {value:g} "})
    assert settings[key] == value
    assert type(settings[key]) is type(DEFAULTS[key])


@pytest.mark.parametrize("key", WHOLE_NUMBERS)
def test_every_whole_number_refuses_a_fraction(tmp_path, key):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_settings(str(tmp_path), environ={f"PROVISIONER_{key}": "2.5"})
    write_toml(tmp_path / "config.toml", f"{key} = 2.5\n")
    with pytest.raises(ConfigError, match=f"config key {key}: expected a whole number"):
        load_settings(str(tmp_path), environ={})

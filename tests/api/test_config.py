"""Configuration: defaults, the TOML file, environment overrides, test overrides and errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO_ROOT

from provisioner import create_app
from provisioner.config import CHECKOUT_WORKFLOWS
from provisioner.config import DEFAULTS
from provisioner.config import ConfigError
from provisioner.config import database_uri
from provisioner.config import default_data_dir
from provisioner.config import load_settings
from provisioner.config import workflows_dir

PROVISIONER_SCRIPT = Path(sys.executable).with_name("provisioner")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``PROVISIONER_*`` variable from the outside world leaks into a test."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    return monkeypatch


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


def test_create_app_reads_environment_and_file(tmp_path, clean_env):
    """The app factory applies the file and the environment to ``app.config``."""
    path = write_toml(tmp_path / "app.toml", 'SERVER_URL = "http://file"\nTRUSTED_PROXIES = 1\n')
    clean_env.setenv("PROVISIONER_CONFIG", str(path))
    clean_env.setenv("PROVISIONER_SERVER_URL", "http://env")
    clean_env.setenv("PROVISIONER_INSTALL_TIMEOUT_MINUTES", "0.05")
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"})
    assert app.config["SERVER_URL"] == "http://env"
    assert app.config["TRUSTED_PROXIES"] == 1
    assert app.config["INSTALL_TIMEOUT_MINUTES"] == pytest.approx(0.05)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'a.db'}"


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


def test_create_app_refuses_a_bad_value(tmp_path, clean_env):
    """The factory stops on a bad setting instead of building a broken app."""
    clean_env.setenv("PROVISIONER_MAX_INSTALL_ATTEMPTS", "lots")
    with pytest.raises(ConfigError, match="MAX_INSTALL_ATTEMPTS"):
        create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"})


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the ``provisioner`` console script with only the given ``PROVISIONER_*`` variables."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    environ["PROVISIONER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    environ.update(env)
    return subprocess.run(
        [str(PROVISIONER_SCRIPT), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('MAX_INSTALL_ATTEMPTS = "x"\n', "MAX_INSTALL_ATTEMPTS"),
        ("INSTALL_TIMEOUT_MINUTES = -3\n", "INSTALL_TIMEOUT_MINUTES"),
        ("BOGUS_KEY = 1\n", "BOGUS_KEY"),
        ("AUTO_REGISTER = = true\n", "bad.toml"),
    ],
    ids=["bad-type", "out-of-range", "unknown-key", "unparseable"],
)
@pytest.mark.parametrize("command", [["nodes", "list"], ["db", "upgrade"]], ids=" ".join)
def test_cli_reports_a_bad_config_file_without_traceback(tmp_path, content, named, command):
    """The console script exits non-zero with a one-line message naming the problem."""
    path = write_toml(tmp_path / "bad.toml", content)
    result = run_cli(tmp_path, *command, PROVISIONER_CONFIG=str(path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output
    assert "Traceback" not in output


def test_cli_config_option_reports_a_bad_file(tmp_path):
    """``provisioner --config FILE`` is checked the same way as ``PROVISIONER_CONFIG``."""
    path = write_toml(tmp_path / "bad.toml", "TRUSTED_PROXIES = -1\n")
    result = run_cli(tmp_path, "--config", str(path), "nodes", "list")
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_reports_a_bad_environment_value(tmp_path):
    """A bad ``PROVISIONER_<KEY>`` stops the CLI with the key's name."""
    result = run_cli(tmp_path, "nodes", "list", PROVISIONER_INSTALL_TIMEOUT_MINUTES="abc")
    assert result.returncode != 0
    assert "INSTALL_TIMEOUT_MINUTES" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_refuses_to_start_on_a_bad_config(tmp_path):
    """``provisioner serve --config bad.toml`` exits at once instead of serving."""
    path = write_toml(tmp_path / "bad.toml", 'AUTO_REGISTER = "perhaps"\n')
    result = run_cli(tmp_path, "serve", "--config", str(path), "--port", "0")
    assert result.returncode != 0
    assert "AUTO_REGISTER" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_runs_with_a_good_config_file(tmp_path):
    """The same command succeeds with a valid file (so the failures above are about the file)."""
    path = write_toml(tmp_path / "good.toml", "MAX_INSTALL_ATTEMPTS = 4\n")
    assert run_cli(tmp_path, "db", "upgrade", PROVISIONER_CONFIG=str(path)).returncode == 0
    result = run_cli(tmp_path, "nodes", "list", PROVISIONER_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert "0 of 0 node(s)" in result.stdout


def test_workflows_dir_default_is_the_instance_folder_or_a_checkouts_examples(tmp_path):
    """Unset, WORKFLOWS_DIR is instance/workflows; while that is missing, in a checkout, the
    checkout's examples (so ``provisioner`` run by hand knows the example workflows)."""
    assert workflows_dir("", str(tmp_path)) == str(CHECKOUT_WORKFLOWS)
    (tmp_path / "workflows").mkdir()
    assert workflows_dir("", str(tmp_path)) == str(tmp_path / "workflows")
    assert workflows_dir("flows", str(tmp_path)) == str(tmp_path / "flows")
    assert workflows_dir("/srv/flows", str(tmp_path)) == "/srv/flows"


def test_cli_by_hand_in_a_checkout_knows_the_example_workflows(tmp_path):
    """Without the Makefile's export, ``provisioner workflows list`` finds the examples."""
    result = run_cli(tmp_path, "workflows", "list")
    assert result.returncode == 0, result.stderr
    assert "ubuntu-24.04" in result.stdout


def test_data_dir_defaults_to_systemds_state_directory(tmp_path):
    """Under systemd (``StateDirectory=``) the data lives in ``$STATE_DIRECTORY``."""
    state = tmp_path / "state"
    assert default_data_dir({"STATE_DIRECTORY": f"{state}:{tmp_path / 'other'}"}) == state


def test_data_dir_defaults_to_instance_in_a_checkout():
    """Run from a source checkout, the data stays in its ``instance/`` folder, as before."""
    checkout = REPO_ROOT
    assert default_data_dir({}) == checkout / "instance"


def test_data_dir_setting_moves_everything_written(tmp_path, clean_env):
    """DATA_DIR (here from the environment) holds the SQLite file and the secret key."""
    clean_env.setenv("PROVISIONER_DATA_DIR", str(tmp_path / "data"))
    app = create_app({"TESTING": True})
    assert app.instance_path == str(tmp_path / "data")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'data'}/provisioner.db"
    assert (tmp_path / "data" / "secret_key").exists()


def test_a_data_dir_that_cannot_be_made_names_the_setting(tmp_path, clean_env):
    """An unusable DATA_DIR stops start-up with a ConfigError naming DATA_DIR."""
    (tmp_path / "file").write_text("")
    clean_env.setenv("PROVISIONER_DATA_DIR", str(tmp_path / "file" / "data"))
    with pytest.raises(ConfigError, match="DATA_DIR"):
        create_app({"TESTING": True})

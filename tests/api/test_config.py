"""Configuration as the app and the console script apply it: ``create_app`` and
``provisioner`` run with good and bad files, environment values and data directories. The
rules themselves (defaults, precedence, every bad value): tests/unit/test_config.py."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner import create_app
from provisioner.cli import main
from provisioner.config import ConfigError

PROVISIONER_SCRIPT = Path(sys.executable).with_name("provisioner")


def write_toml(path: Path, text: str) -> Path:
    """Write a TOML file and return its path."""
    path.write_text(text)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``PROVISIONER_*`` variable from the outside world leaks into a test."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    return monkeypatch


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
    ("command", "content", "named"),
    [
        (["nodes", "list"], 'MAX_INSTALL_ATTEMPTS = "x"\n', "MAX_INSTALL_ATTEMPTS"),
        (["db", "upgrade"], "AUTO_REGISTER = = true\n", "bad.toml"),
    ],
)
def test_cli_in_process_reports_a_bad_config_file_in_one_line(tmp_path, command, content, named):
    """The command's own error handling, run in-process (the console-script runs below are
    slow-marked; every kind of bad file is in tests/unit/test_config.py)."""
    path = write_toml(tmp_path / "bad.toml", content)
    environ = {key: None for key in os.environ if key.startswith("PROVISIONER_")}
    environ |= {"PROVISIONER_CONFIG": str(path), "PROVISIONER_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, command, env=environ)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert named in result.output


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
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


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_cli_config_option_reports_a_bad_file(tmp_path):
    """``provisioner --config FILE`` is checked the same way as ``PROVISIONER_CONFIG``."""
    path = write_toml(tmp_path / "bad.toml", "TRUSTED_PROXIES = -1\n")
    result = run_cli(tmp_path, "--config", str(path), "nodes", "list")
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_cli_reports_a_bad_environment_value(tmp_path):
    """A bad ``PROVISIONER_<KEY>`` stops the CLI with the key's name."""
    result = run_cli(tmp_path, "nodes", "list", PROVISIONER_INSTALL_TIMEOUT_MINUTES="abc")
    assert result.returncode != 0
    assert "INSTALL_TIMEOUT_MINUTES" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_serve_refuses_to_start_on_a_bad_config(tmp_path):
    """``provisioner serve --config bad.toml`` exits at once instead of serving."""
    path = write_toml(tmp_path / "bad.toml", 'AUTO_REGISTER = "perhaps"\n')
    result = run_cli(tmp_path, "serve", "--config", str(path), "--port", "0")
    assert result.returncode != 0
    assert "AUTO_REGISTER" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_cli_runs_with_a_good_config_file(tmp_path):
    """The same command succeeds with a valid file (so the failures above are about the file)."""
    path = write_toml(tmp_path / "good.toml", "MAX_INSTALL_ATTEMPTS = 4\n")
    assert run_cli(tmp_path, "db", "upgrade", PROVISIONER_CONFIG=str(path)).returncode == 0
    result = run_cli(tmp_path, "nodes", "list", PROVISIONER_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert "0 of 0 node(s)" in result.stdout


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_cli_by_hand_in_a_checkout_knows_the_example_workflows(tmp_path):
    """Without the Makefile's export, ``provisioner workflows list`` finds the examples."""
    result = run_cli(tmp_path, "workflows", "list")
    assert result.returncode == 0, result.stderr
    assert "ubuntu-24.04" in result.stdout


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

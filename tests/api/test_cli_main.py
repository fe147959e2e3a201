"""The ``provisioner`` command run: --version, and operational errors as one line
(``--debug`` for the traceback). Its commands and their help (no app):
tests/unit/test_cli_help.py."""

import os
import re
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main

PROVISIONER_SCRIPT = Path(sys.executable).with_name("provisioner")


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the console script from ``tmp_path`` with only the given ``PROVISIONER_*``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    environ["PROVISIONER_DATA_DIR"] = str(tmp_path / "data")
    environ.update(env)
    return subprocess.run(
        [str(PROVISIONER_SCRIPT), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_version_option(tmp_path):
    """``provisioner --version`` (and ``python -m provisioner --version``) print the version."""
    expected = f"provisioner {version('provisioner')}"
    assert run(tmp_path, "--version").stdout.strip() == expected
    module = subprocess.run(
        [sys.executable, "-m", "provisioner", "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.stdout.strip() == expected, module.stderr


#: A log record (logs.py's text format: a UTC timestamp, then the level), not an error line.
LOG_LINE = re.compile(r"^\S+Z (DEBUG|INFO|WARNING) ")


def assert_one_line_error(result: subprocess.CompletedProcess, *named: str) -> None:
    """A non-zero exit, one error line naming ``named`` (after any log lines), no traceback."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not LOG_LINE.match(line)]
    assert len(lines) == 1, result.stderr
    for word in named:
        assert word in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_bad_database_url_in_process_is_one_line(tmp_path):
    """The group's error handling run in-process (the console-script runs are slow-marked)."""
    environ = {key: None for key in os.environ if key.startswith("PROVISIONER_")}
    environ |= {"PROVISIONER_DATA_DIR": str(tmp_path), "PROVISIONER_DATABASE_URL": "not a url"}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=environ)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "DATABASE_URL" in result.output


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", "DATABASE_URL"),
        ("not a url", "DATABASE_URL"),
        ("mysql://db.example/provisioner", "MySQLdb"),
    ],
    ids=["unreachable", "unparseable", "no-driver"],
)
def test_a_bad_database_url_is_one_line(tmp_path, url, named):
    """A bad DATABASE_URL stops ``db upgrade`` with one line naming the setting."""
    assert_one_line_error(run(tmp_path, "db", "upgrade", PROVISIONER_DATABASE_URL=url), named)


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_debug_shows_the_traceback(tmp_path):
    """``--debug`` keeps the traceback of the same error."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"
    result = run(tmp_path, "--debug", "db", "upgrade", PROVISIONER_DATABASE_URL=url)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_an_unwritable_data_dir_is_one_line(tmp_path):
    """A DATA_DIR that cannot be created names DATA_DIR."""
    result = run(tmp_path, "nodes", "list", PROVISIONER_DATA_DIR="/proc/provisioner-data")
    assert_one_line_error(result, "DATA_DIR")


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_a_port_in_use_is_one_line(tmp_path):
    """``serve`` on a taken port names the port instead of a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = run(tmp_path, "serve", "--port", port, "--reuse-port")
    assert_one_line_error(result, port)


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_data_dir_holds_the_database_and_the_secret(tmp_path):
    """With only DATA_DIR set, the SQLite file and the secret key are written there."""
    assert run(tmp_path, "db", "upgrade").returncode == 0
    assert {"provisioner.db", "secret_key"} <= set(os.listdir(tmp_path / "data"))

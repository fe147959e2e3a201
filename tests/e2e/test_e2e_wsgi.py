"""``provisioner.wsgi:app`` under gunicorn: three workers start together on a new database.

Each worker imports the entry, so each migrates and starts a scheduler: they must take turns
migrating, and exactly one of them may run the scheduled jobs. (gunicorn starts its workers
one after another, so their migrations seldom overlap here; test_migrations.py's four
simultaneous ``db upgrade`` are the reliable test of the migration lock.)
"""

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from serverproc import free_port
from serverproc import server_environment

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GUNICORN = Path(sys.executable).with_name("gunicorn")
LEADER = re.compile(r"scheduler: this process \(pid (\d+)\) runs the scheduled jobs")
STANDBY = "stands by"
DEADLINE_SECONDS = 60


@pytest.fixture
def gunicorn() -> list[str]:
    """The gunicorn command, without the control socket gunicorn 25+ makes under $HOME."""
    program = str(GUNICORN) if GUNICORN.exists() else shutil.which("gunicorn")
    if program is None:
        pytest.skip("gunicorn is not installed (it is in the test extra)")
    usage = subprocess.run([program, "--help"], capture_output=True, text=True).stdout
    return [program, *(["--no-control-socket"] if "--no-control-socket" in usage else [])]


def start(
    gunicorn: list[str], tmp_path: Path, settings: dict[str, str]
) -> tuple[subprocess.Popen, int, Path]:
    """gunicorn with three workers on a free loopback port; its log file."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*gunicorn, "-w", "3", "-b", f"127.0.0.1:{port}", "provisioner.wsgi:app"],
            cwd=tmp_path,
            env=server_environment(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    return process, port, log


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def test_three_workers_on_a_new_sqlite_file(gunicorn, tmp_path):
    """All three workers boot and migrate in turn; one runs the jobs, two stand by."""
    settings = {
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_SWEEP_INTERVAL_SECONDS": "0.2",
        "PROVISIONER_LOG_LEVEL": "INFO",
    }
    process, port, log = start(gunicorn, tmp_path, settings)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            text = log.read_text()
            if process.poll() is not None:
                break
            if len(LEADER.findall(text)) + text.count(STANDBY) >= 3 and healthy(port):
                break
            time.sleep(0.2)
        text = log.read_text()
        assert process.poll() is None, text
        assert len(LEADER.findall(text)) == 1 and text.count(STANDBY) == 2, text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DEADLINE_SECONDS)
    text = log.read_text()
    assert "database is locked" not in text and "Traceback" not in text, text
    assert code == 0, text
    assert (tmp_path / "data" / "provisioner.db").exists()


def test_a_bad_setting_stops_the_workers_with_one_line(gunicorn, tmp_path):
    """A bad DATABASE_URL: one line naming it from the entry, no traceback, non-zero exit."""
    settings = {
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_DATABASE_URL": "bogus",
    }
    process, _, log = start(gunicorn, tmp_path, settings)
    try:
        code = process.wait(timeout=DEADLINE_SECONDS)
    finally:
        process.kill()
    text = log.read_text()
    assert code != 0
    assert "provisioner: config key DATABASE_URL: not a database URL" in text, text
    # gunicorn's arbiter may print a traceback of its own while halting; none of ours.
    assert not re.search(r'File "[^"]*/provisioner/', text), text

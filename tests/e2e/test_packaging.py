"""The real thing: the sdist and the wheel, installed outside the checkout and run as a user.

``python -m build`` makes the sdist and, from it, the wheel; ``twine check`` checks both. The
wheel goes into a fresh virtualenv under /tmp (root-owned, so read-only to the server's
user), with and without the ``postgres`` extra. From another directory, as ``nobody`` with
only DATA_DIR writable, ``provisioner --version``, ``db upgrade`` and ``serve`` run, and curl
walks a machine through its life: registered by booting, given a workflow and moved to
pending, booted into its installer, reporting with the token its boot script carries,
installed, first boot; a second machine stays silent and shows up in the stalled feed.
"""

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import databases
import pytest
from paths import REPO_ROOT
from serverproc import free_port
from workflowfiles import write_test_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = REPO_ROOT
API_TOKEN = "packaging-test-api-token-0123456789"
MAC_A = "52:54:00:50:00:0a"
MAC_B = "52:54:00:50:00:0b"
DEADLINE_SECONDS = 60


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``command``, failing the test with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A directory under /tmp every user may enter (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        pytest.skip("running the server as an unprivileged user (nobody) needs root")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (make e2e-deps)")
    path = Path(tempfile.mkdtemp(prefix="provisioner-packaging-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def dist(scratch: Path) -> Path:
    """The sdist and the wheel built from it, both passing ``twine check --strict``."""
    out = scratch / "dist"
    build = run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])
    warnings = [
        line
        for line in (build.stdout + build.stderr).splitlines()
        if "warn" in line.lower()
        and "byte-compiling is disabled" not in line  # PYTHONDONTWRITEBYTECODE
    ]
    assert warnings == [], "\n".join(warnings)
    files = sorted(out.iterdir())
    assert sorted(file.suffix for file in files) == [".gz", ".whl"], files
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, files)])
    return out


def as_nobody(*command: str) -> subprocess.CompletedProcess:
    """Run ``command`` as ``nobody`` with an empty environment."""
    user = pwd.getpwnam("nobody")
    prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    return subprocess.run(
        [*prefix, "--", "env", "-i", *command], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def interpreter(scratch: Path) -> str:
    """A Python 3.11+ that ``nobody`` may run, for the server's virtualenv.

    Not necessarily this one: a Python under /root (pyenv) is out of nobody's reach, as it
    would be of a system user in a real deployment.
    """
    check = "import sys, venv; assert sys.version_info >= (3, 11)"
    for candidate in (sys._base_executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and as_nobody(candidate, "-c", check).returncode == 0:
            return candidate
    pytest.skip("no Python 3.11+ with venv that nobody may run (Debian: python3-venv)")


def install(scratch: Path, dist: Path, interpreter: str, extra: str) -> Path:
    """A new virtualenv outside the checkout with the wheel (and ``extra``) installed."""
    venv = scratch / f"venv{'-' + extra if extra else ''}"
    run([interpreter, "-m", "venv", str(venv)])
    wheel = next(dist.glob("*.whl"))
    run([str(venv / "bin" / "pip"), "install", "-q", f"{wheel}[{extra}]" if extra else str(wheel)])
    return venv


class Nobody:
    """Runs the installed ``provisioner`` as ``nobody`` from ``/``, with only ``env`` set."""

    def __init__(self, venv: Path, env: dict[str, str]) -> None:
        user = pwd.getpwnam("nobody")
        self.prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}"]
        self.prefix += ["--clear-groups", "--", "env", "-i", f"PATH={venv}/bin:/usr/bin:/bin"]
        self.prefix += ["HOME=/nonexistent", "PYTHONUNBUFFERED=1"]
        self.prefix += [f"{key}={value}" for key, value in env.items()]
        self.venv = venv
        self.env = env

    def with_settings(self, **settings: str) -> "Nobody":
        """The same user and settings, plus ``settings``."""
        return Nobody(self.venv, self.env | settings)

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, str(self.venv / "bin" / args[0]), *args[1:]]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return run(self.command(*args), cwd="/")

    def may_write(self, path: Path) -> bool:
        return as_nobody("test", "-w", str(path)).returncode == 0


class Curl:
    """curl against the server, with the API token (``token=None``: without)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, method: str, path: str, body: dict | None = None, **kw) -> dict | str:
        token = kw.get("token", API_TOKEN)
        command = ["curl", "-fsS", "--max-time", "30", "-X", method, self.url + path]
        if token:
            command += ["-H", f"Authorization: Bearer {token}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        output = run(command).stdout
        return json.loads(output) if output.startswith("{") else output


def wait_for_health(curl: Curl, server: subprocess.Popen, log: Path) -> dict:
    """Poll ``/health`` until it answers 200 (the server's log on failure)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        probe = subprocess.run(
            ["curl", "-fsS", "--max-time", "5", curl.url + "/health"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return json.loads(probe.stdout)
        time.sleep(0.2)
    raise AssertionError(f"not healthy in {DEADLINE_SECONDS} s:\n{log.read_text()}")


def serve(nobody: Nobody, port: int, log: Path) -> subprocess.Popen:
    with log.open("w") as output:
        return subprocess.Popen(
            nobody.command("provisioner", "serve", "--host", "127.0.0.1", "--port", str(port)),
            cwd="/",
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def stop(server: subprocess.Popen, log: Path) -> None:
    """SIGTERM the server (if it still runs); it must stop cleanly."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=DEADLINE_SECONDS) == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()


def boot_into_installer(curl: Curl, mac: str) -> str:
    """Register ``mac`` by booting, assign the workflow, pend it, boot: its report token."""
    script = curl("GET", f"/api/v1/boot?mac={mac}", token=None)
    assert "registered" in script, script
    node = curl("GET", f"/api/v1/nodes/{mac}")["data"]
    assert node["state"] == "discovered"
    curl("PATCH", f"/api/v1/nodes/{node['id']}", {"workflow_id": "pkg-os"})
    curl("PATCH", f"/api/v1/nodes/{node['id']}/state", {"state": "pending"})
    script = curl("GET", f"/api/v1/boot?mac={mac}", token=None)
    found = re.search(r"^kernel .* token=(\S+)", script, re.MULTILINE)
    assert found, script
    assert curl("GET", f"/api/v1/nodes/{mac}")["data"]["state"] == "installing"
    return found.group(1)


def report(curl: Curl, mac: str, token: str, event: str) -> None:
    body = {"mac_address": mac, "event": event, "event_id": f"{mac}-{event}"}
    curl("POST", "/api/v1/report", body, token=token)


def walk_the_lifecycle(nobody: Nobody, data_dir: Path, scratch: Path, name: str) -> None:
    """Serve, install one machine, leave another silent; restart with a short timeout and
    find the silent one in the stalled feed."""
    port = free_port()
    curl = Curl(f"http://127.0.0.1:{port}")
    log = scratch / f"serve-{name}.log"
    server = serve(nobody, port, log)
    try:
        health = wait_for_health(curl, server, log)
        assert health["status"] == "ok" and health["version"], health
        headers = run(["curl", "-fsS", "-o", "/dev/null", "-D", "-", curl.url + "/health"])
        assert f"server: provisioner/{health['version']}\n" in headers.stdout.lower()
        token = boot_into_installer(curl, MAC_A)
        for event in ("install_started", "install_complete"):
            report(curl, MAC_A, token, event)
        assert curl("GET", f"/api/v1/nodes/{MAC_A}")["data"]["state"] == "installed"
        report(curl, MAC_A, token, "first_boot")
        assert curl("GET", f"/api/v1/nodes/{MAC_A}")["data"]["state"] == "active"
        boot_into_installer(curl, MAC_B)
        assert curl("GET", "/api/v1/nodes/stalled")["data"] == []
    finally:
        stop(server, log)

    # Again with a 0.6-second install timeout: the scheduler times the silent machine out.
    fast = nobody.with_settings(
        PROVISIONER_INSTALL_TIMEOUT_MINUTES="0.01", PROVISIONER_SWEEP_INTERVAL_SECONDS="0.2"
    )
    log = scratch / f"serve-{name}-again.log"
    server = serve(fast, port, log)
    try:
        wait_for_health(curl, server, log)
        deadline = time.monotonic() + DEADLINE_SECONDS
        stalled: list = []
        while not any(entry["timeouts"] for entry in stalled) and time.monotonic() < deadline:
            time.sleep(0.2)
            stalled = curl("GET", "/api/v1/nodes/stalled")["data"]
        assert [(entry["mac_address"], entry["timeouts"]) for entry in stalled] == [(MAC_B, 1)]
        assert curl("GET", f"/api/v1/nodes/{MAC_A}")["data"]["state"] == "active"
    finally:
        stop(server, log)
    assert "secret_key" in os.listdir(data_dir)


def prepare(scratch: Path, name: str, database_url: str | None) -> tuple[Path, dict[str, str]]:
    """DATA_DIR (owned by nobody, the only writable place) and the server's settings."""
    data_dir = scratch / f"data-{name}"
    data_dir.mkdir()
    user = pwd.getpwnam("nobody")
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    workflows = scratch / f"workflows-{name}"
    workflows.mkdir()
    write_test_workflow(
        workflows, "pkg-os", cmdline="console=ttyS0 node=${node_id} token=${report_token}"
    )
    env = {
        "PROVISIONER_DATA_DIR": str(data_dir),
        "PROVISIONER_WORKFLOWS_DIR": str(workflows),
        "PROVISIONER_API_TOKENS": API_TOKEN,
        "PROVISIONER_SERVER_URL": "http://127.0.0.1",
    }
    if database_url:
        env["PROVISIONER_DATABASE_URL"] = database_url
    return data_dir, env


def check_installed(nobody: Nobody, venv: Path, data_dir: Path) -> None:
    """The package comes from the venv, which the server's user may not write."""
    found = run(
        [str(venv / "bin" / "python"), "-c", "import provisioner; print(provisioner.__file__)"],
        cwd="/",
    )
    package = Path(found.stdout.strip()).parent
    assert package.is_relative_to(venv) and not package.is_relative_to(ROOT), package
    assert not nobody.may_write(package)
    assert not nobody.may_write(package / "migrations")
    assert nobody.may_write(data_dir)


def test_wheel_on_sqlite_as_an_unprivileged_user(scratch, dist, interpreter):
    """Without the postgres extra: SQLite in DATA_DIR, psycopg not even installed."""
    venv = install(scratch, dist, interpreter, extra="")
    data_dir, env = prepare(scratch, "sqlite", None)
    nobody = Nobody(venv, env)
    check_installed(nobody, venv, data_dir)
    assert not list(venv.glob("lib/python*/site-packages/psycopg"))
    version = nobody.run("provisioner", "--version").stdout
    assert re.fullmatch(r"provisioner \d+\.\d+\.\d+\S*\n", version), version
    nobody.run("provisioner", "db", "upgrade")
    assert (data_dir / "provisioner.db").exists()
    walk_the_lifecycle(nobody, data_dir, scratch, "sqlite")


def test_wheel_with_the_postgres_extra(scratch, dist, interpreter):
    """With ``provisioner[postgres]``, against a scratch database on the local PostgreSQL."""
    admin_url, reason = databases.postgres_admin_url()
    if admin_url is None:
        pytest.skip(reason)
    venv = install(scratch, dist, interpreter, extra="postgres")
    url = databases.create_scratch_database(admin_url)
    try:
        data_dir, env = prepare(scratch, "postgres", url)
        nobody = Nobody(venv, env)
        check_installed(nobody, venv, data_dir)
        nobody.run("provisioner", "--version")
        nobody.run("provisioner", "db", "upgrade")
        walk_the_lifecycle(nobody, data_dir, scratch, "postgres")
        assert not (data_dir / "provisioner.db").exists()
    finally:
        databases.drop_database(admin_url, url)


def test_without_the_extra_a_postgresql_url_is_one_line(scratch, dist, interpreter):
    """A postgresql URL on an install without the extra names the extra to install."""
    venv = scratch / "venv"
    if not venv.exists():
        venv = install(scratch, dist, interpreter, extra="")
    data_dir, env = prepare(scratch, "no-driver", "postgresql+psycopg://db.invalid/x")
    result = subprocess.run(
        Nobody(venv, env).command("provisioner", "db", "upgrade"),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "Error: config key DATABASE_URL: postgresql+psycopg needs the psycopg module; "
        "install the PostgreSQL extra: pip install 'provisioner[postgres]'"
    ]


def test_systemd_unit_verifies(tmp_path):
    """contrib/provisioner.service passes ``systemd-analyze verify`` without a warning.

    verify also checks that ExecStart's program exists, so the unit is verified with its
    install prefix /opt/provisioner pointed at a stand-in.
    """
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    unit = (ROOT / "contrib" / "provisioner.service").read_text()
    for setting in ("StateDirectory=provisioner", "ProtectSystem=strict", "DynamicUser=yes"):
        assert f"\n{setting}\n" in unit
    assert "\nExecStart=/opt/provisioner/bin/provisioner serve " in unit
    (tmp_path / "bin").mkdir()
    program = tmp_path / "bin" / "provisioner"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    copy = tmp_path / "provisioner.service"
    copy.write_text(unit.replace("/opt/provisioner", str(tmp_path)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    if "Failed to connect to bus" in result.stderr or "Can't operate" in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

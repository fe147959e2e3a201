"""Every shell fragment the example workflows ship, run for real under busybox ash and dash.

The Ubuntu (autoinstall) and Rocky (kickstart) installers cannot run here, and the Debian
one runs only in the slow QEMU test; their validators check syntax, not behaviour. Here the
fragments (late-commands, ``%pre``/``%post``/``%onerror``, the d-i hooks and preseed
commands) run as their installer runs them, against a fake report endpoint on loopback
that serves the real rendered configs and ``report.sh`` and records every report. Each run
is made to fail on the class of bug that hung the real Debian installer:

- its stdout and stderr are pipes the test reads to the end, as d-i's ``log-output`` does:
  a background job that keeps them open is a hang;
- its stdin is a pipe the test never closes: a command that waits for input is a hang;
- it runs with ``-e``: a command that fails where the fragment did not expect it stops it.

A hang fails after ``FRAGMENT_DEADLINE_SECONDS``; the paths an installer writes (/tmp,
/target, /mnt/sysroot, ...) are moved under the test's directory, and the installer's
own commands (in-target, debconf-set, systemctl, ...) are stubs that log their arguments.
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.test_install_configs import EXAMPLE_WORKFLOWS  # noqa: F401 (the examples under test)
from api.test_install_configs import arg_value
from api.test_install_configs import boot
from api.test_install_configs import kernel_args
from api.test_install_configs import kickstart_scripts
from api.test_install_configs import preseed_commands
from api.test_install_configs import register
from provisioner import create_app
from provisioner.extensions import db
from provisioner.serve import upgrade_database

MAC = "52:54:00:5f:00:01"
FRAGMENT_DEADLINE_SECONDS = 60
#: Paths an installer's fragments write to, moved under the test's directory.
INSTALLER_PATHS = (
    "/tmp/",
    "/target",
    "/mnt/sysroot",
    "/etc/systemd/system",
    "/var/log/",
    "/var/lib/cdebconf",
    "/var/lib/provisioner",
    "/root/",
)
#: The installers' own commands, as stubs that log their arguments and succeed.
STUBS = ("in-target", "debconf-set", "list-devices", "systemctl")


def shells() -> list[Any]:
    """busybox ash (d-i's shell) and dash, each skipped where it is not installed."""
    found = []
    for name, command in (("busybox-ash", ["busybox", "ash"]), ("dash", ["dash"])):
        mark = pytest.mark.skipif(
            shutil.which(command[0]) is None,
            reason=f"{command[0]} is not installed (make e2e-deps installs busybox)",
        )
        found.append(pytest.param(command, id=name, marks=mark))
    return found


@pytest.fixture
def backend() -> str:
    """SQLite only: these tests are about shells, and the reports go to a fake endpoint."""
    return "sqlite"


# -- the fake report endpoint ---------------------------------------------------------------


class FakeEndpoint:
    """Loopback HTTP: GETs answered by the real app (configs, report.sh); reports recorded."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.client: Any = None
        #: Applied to each config an installer fetches (the scratch root's paths).
        self.rewrite: Any = None
        self._lock = threading.Lock()
        handler = functools.partial(_EndpointHandler, self)
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def get(self, path: str, *, rewrite: bool = False) -> tuple[int, bytes]:
        with self._lock:
            response = self.client.get(path)
            body = response.get_data()
        if rewrite and self.rewrite is not None and "/config/" in path:
            body = self.rewrite(body.decode()).encode()
        return response.status_code, body

    def record(self, body: dict[str, Any], authorization: str) -> None:
        with self._lock:
            self.reports.append(body | {"authorization": authorization})

    def events(self) -> list[tuple[str, str | None]]:
        with self._lock:
            return [(report["event"], report.get("message")) for report in self.reports]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _EndpointHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, endpoint: FakeEndpoint, *args: Any) -> None:
        self.endpoint = endpoint
        super().__init__(*args)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(*self.endpoint.get(self.path, rewrite=True))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/api/v1/report":
            self._answer(404, b"{}")
            return
        self.endpoint.record(json.loads(body), self.headers.get("Authorization", ""))
        self._answer(200, b'{"success": true}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint(app_config: dict, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEndpoint]:
    """The fake endpoint, its app serving the shipped examples in token mode."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    fake = FakeEndpoint()
    settings = {"WORKFLOWS_DIR": str(EXAMPLE_WORKFLOWS), "REPORT_AUTH": "token"}
    application = create_app(app_config | settings | {"SERVER_URL": fake.url})
    upgrade_database(application)
    fake.client = application.test_client()
    yield fake
    fake.close()
    with application.app_context():
        db.engine.dispose()


# -- running a fragment the way its installer does ------------------------------------------


class Installer:
    """A scratch root for one installer's fragments, and a way to run them."""

    def __init__(self, root: Path, shell: list[str], endpoint: FakeEndpoint) -> None:
        self.root = root
        self.shell = shell
        self.endpoint = endpoint
        endpoint.rewrite = self.moved
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        # "sh" in a fragment (sh /tmp/provisioner-hooks.sh ...) is the shell under test.
        (self.bin / "sh").symlink_to(shutil.which(shell[0]) or shell[0])
        for name in STUBS:
            stub = self.bin / name
            stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {root}/stubs.log\n')
            stub.chmod(0o755)
        for path in INSTALLER_PATHS:
            (root / path.strip("/")).mkdir(parents=True, exist_ok=True)
        (root / "target" / "etc" / "systemd" / "system").mkdir(parents=True)
        (root / "mnt" / "sysroot").mkdir(parents=True, exist_ok=True)

    def moved(self, text: str) -> str:
        """``text`` with every installer path under the scratch root."""
        pattern = "|".join(re.escape(path) for path in INSTALLER_PATHS)
        return re.sub(rf"(?<![\w.:/])({pattern})", lambda m: f"{self.root}{m.group(1)}", text)

    def environment(self, busybox_tools: bool) -> dict[str, str]:
        path = f"{self.bin}:{os.environ['PATH']}"
        if busybox_tools:  # d-i has busybox's wget and friends, not GNU's
            applets = self.root / "busybox-bin"
            if not applets.exists():
                applets.mkdir()
                busybox = shutil.which("busybox")
                assert busybox, "busybox is needed for the installer's own tools"
                for applet in ("wget", "sed", "awk", "grep", "tail", "cut", "sleep"):
                    (applets / applet).symlink_to(busybox)
            path = f"{applets}:{path}"
        return {
            "PATH": path,
            "HOME": str(self.root),
            "PROVISIONER_SPOOL": str(self.root / "spool"),
            "PROVISIONER_RETRIES": "1",
        }

    def run(self, script: str, *args: str, busybox_tools: bool = False) -> tuple[int, str]:
        """Run ``script`` with ``-e``, stdin held open, stdout/stderr read to their end."""
        read_end, write_end = os.pipe()  # never written, closed only after the run
        try:
            result = subprocess.run(
                [*self.shell, "-e", "-c", self.moved(script), "fragment", *args],
                stdin=read_end,
                capture_output=True,  # returns only when every holder closes the pipes
                text=True,
                env=self.environment(busybox_tools),
                cwd=self.root,
                timeout=FRAGMENT_DEADLINE_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"hang: the fragment (or a job it left behind) still held stdin/stdout/stderr "
                f"after {FRAGMENT_DEADLINE_SECONDS} s\n{script}\n{exc.stdout!r} {exc.stderr!r}"
            )
        finally:
            os.close(read_end)
            os.close(write_end)
        return result.returncode, result.stdout + result.stderr


@pytest.fixture(params=shells())
def installer(request, tmp_path: Path, endpoint: FakeEndpoint) -> Installer:
    return Installer(tmp_path / "root", request.param, endpoint)


def install_example(endpoint: FakeEndpoint, workflow: str) -> list[str]:
    """Register and boot a node for ``workflow``; its kernel arguments."""
    register(endpoint.client, MAC, workflow=workflow, hostname="node-5f")
    return kernel_args(boot(endpoint.client, MAC))


def fetch(endpoint: FakeEndpoint, url: str) -> str:
    status, body = endpoint.get(url.removeprefix(endpoint.url))
    assert status == 200, (url, body)
    return body.decode()


# -- Ubuntu autoinstall ---------------------------------------------------------------------


def test_ubuntu_autoinstall_commands_report_and_return(installer, endpoint):
    """early-, late- and error-commands, each as subiquity runs it (``sh -c``)."""
    seed = arg_value(install_example(endpoint, "ubuntu-24.04"), "ds=nocloud;s=")
    autoinstall = yaml.safe_load(fetch(endpoint, seed + "user-data"))["autoinstall"]

    for key in ("early-commands", "late-commands", "error-commands"):
        for command in autoinstall[key]:
            code, output = installer.run(command)
            assert code == 0, (key, command, output)

    assert [event for event, _ in endpoint.events()] == [
        "install_started",
        "install_progress",
        "install_complete",
        "install_failed",
    ]
    assert (installer.root / "target/usr/local/bin/provisioner-report").is_file()
    assert all(report["authorization"].startswith("Bearer ") for report in endpoint.reports)


# -- Rocky kickstart ------------------------------------------------------------------------


def test_rocky_kickstart_scripts_report_and_return(installer, endpoint):
    """%pre, %pre-install, each %post and %onerror, in anaconda's order."""
    url = arg_value(install_example(endpoint, "rocky-9"), "inst.ks=")
    scripts = kickstart_scripts(fetch(endpoint, url))

    for header, body in scripts.items():
        if not header.startswith("%onerror"):
            code, output = installer.run(body)
            assert code == 0, (header, output)
    (installer.root / "tmp/provisioner-report").unlink()  # %onerror must not rely on it
    code, output = installer.run(scripts["%onerror"])
    assert code == 0, output

    assert [event for event, _ in endpoint.events()] == [
        "install_started",
        "install_progress",
        "install_progress",
        "install_complete",
        "install_failed",
    ]
    assert "systemctl enable provisioner-first-boot.service" in stubs_log(installer)
    unit = installer.root / "etc/systemd/system/provisioner-first-boot.service"
    assert "ExecStart=/usr/local/bin/provisioner-report first_boot" in unit.read_text()


def stubs_log(installer: Installer) -> str:
    path = installer.root / "stubs.log"
    return path.read_text() if path.exists() else ""


# -- Debian preseed and its hooks (busybox tools, as in d-i) --------------------------------


def debian_fragments(endpoint: FakeEndpoint) -> tuple[dict[str, str], str]:
    """The preseed's commands and the rendered hooks.sh."""
    preseed = fetch(endpoint, arg_value(install_example(endpoint, "debian-12"), "url="))
    commands = preseed_commands(preseed)
    hooks_url = re.search(r"'(http://\S+/config/hooks\.sh\?token=\S+)'", preseed).group(1)
    return commands, fetch(endpoint, hooks_url)


def test_debian_early_command_returns_while_its_watcher_runs(installer, endpoint):
    """early_command starts the watcher and returns: d-i's log pipe is not held open."""
    commands, _ = debian_fragments(endpoint)

    code, output = installer.run(commands["preseed/early_command"], busybox_tools=True)
    (installer.root / "tmp/provisioner-install-done").touch()  # the watcher stops

    assert code == 0, output
    assert endpoint.events() == [("install_started", "debian-installer read the preseed")]


def test_debian_partman_and_late_commands_report_and_return(installer, endpoint):
    commands, _ = debian_fragments(endpoint)
    code, output = installer.run(commands["preseed/early_command"], busybox_tools=True)
    assert code == 0, output

    for name in ("partman/early_command", "preseed/late_command"):
        code, output = installer.run(commands[name], busybox_tools=True)
        assert code == 0, (name, output)

    assert [event for event, _ in endpoint.events()] == [
        "install_started",
        "install_progress",
        "install_progress",
        "install_complete",
    ]
    assert "in-target systemctl enable provisioner-first-boot.service" in stubs_log(installer)


def test_debian_early_command_reports_when_the_hooks_cannot_be_fetched(installer, endpoint):
    """A hooks URL that fails: early_command reports install_failed itself, then fails."""
    commands, _ = debian_fragments(endpoint)
    broken = commands["preseed/early_command"].replace("/config/hooks.sh?", "/config/nope.sh?")

    code, output = installer.run(broken, busybox_tools=True)

    assert code != 0, output  # d-i shows its dialog; the server already knows
    ((event, message),) = endpoint.events()
    assert event == "install_failed"
    assert "could not be fetched" in message
    assert endpoint.reports[0]["mac_address"] == MAC
    assert endpoint.reports[0]["authorization"].startswith("Bearer ")


#: What d-i 12 logs to its syslog on its way to the "Bad archive mirror" dialog, recorded
#: from the real installer in QEMU (tests/e2e/test_e2e_debian_installer.py): main-menu's steps,
#: and cdebconf's protocol (DEBCONF_DEBUG=5 on the kernel command line).
SYSLOG = """\
Dec  6 19:40:39 main-menu[260]: INFO: Menu item 'netcfg' selected
Dec  6 19:40:39 debconf: --> SET passwd/user-password-crypted $6$secret$hash
Dec  6 19:40:39 debconf: <-- 0 value set
Dec  6 19:40:39 debconf: --> GET passwd/user-password-crypted
Dec  6 19:40:39 debconf: <-- 0 $6$secret$hash
Dec  6 19:40:50 main-menu[260]: INFO: Menu item 'choose-mirror' selected
Dec  6 19:41:00 debconf: --> INPUT medium mirror/http/hostname
Dec  6 19:41:00 debconf: <-- 30 question skipped
Dec  6 19:41:00 debconf: --> GO
Dec  6 19:41:00 debconf: <-- 0 ok
Dec  6 19:41:00 choose-mirror[2114]: WARNING **: mirror does not support the specified release
Dec  6 19:41:00 debconf: --> INPUT critical mirror/bad
Dec  6 19:41:00 debconf: <-- 0 question will be asked
Dec  6 19:41:00 debconf: --> GO
"""
TEMPLATES = """\
Name: mirror/http/hostname
Type: string
Description: Debian archive mirror hostname:

Name: mirror/bad
Type: error
Description: Bad archive mirror
Description-de.UTF-8: Fehlerhafter Archiv-Spiegelserver
Extended_description: An error has been detected while trying to use the mirror.

"""


def test_debian_watcher_reports_the_dialog_d_i_waits_on(installer, endpoint):
    """Two checks in a row on the same unanswered GO: install_failed with step and title."""
    _, hooks = debian_fragments(endpoint)
    (installer.root / "var/log/syslog").write_text(SYSLOG)
    (installer.root / "var/lib/cdebconf/templates.dat").write_text(TEMPLATES)
    hooks = hooks.replace("WATCH_SECONDS=10", "WATCH_SECONDS=0.2")

    code, output = installer.run(hooks, "early", busybox_tools=True)
    assert code == 0, output
    failed = wait_for_event(endpoint, "install_failed")

    assert failed == ("stopped at step choose-mirror: mirror/bad (error: Bad archive mirror)"), (
        endpoint.events()
    )
    assert [event for event, _ in endpoint.events()] == ["install_started", "install_failed"]


def test_debian_watcher_waits_while_d_i_goes_on(installer, endpoint):
    """A question that was answered, or skipped, is no reason to report anything."""
    _, hooks = debian_fragments(endpoint)
    (installer.root / "var/log/syslog").write_text(SYSLOG + "Dec  6 19:41:09 debconf: <-- 0 ok\n")
    (installer.root / "var/lib/cdebconf/templates.dat").write_text(TEMPLATES)
    hooks = hooks.replace("WATCH_SECONDS=10", "WATCH_SECONDS=0.2")

    code, output = installer.run(hooks, "early", busybox_tools=True)
    assert code == 0, output
    # Progress is reported as main-menu starts a step: each report is one more look at the
    # logs, so after the second the answered question has been seen on two checks.
    for step in ("bootstrap-base", "pkgsel"):
        with (installer.root / "var/log/syslog").open("a") as syslog:
            syslog.write(f"Dec  6 19:40:00 main-menu[254]: INFO: Menu item '{step}' selected\n")
        wait_for_progress(endpoint, step)
    (installer.root / "tmp/provisioner-install-done").touch()

    assert [event for event, _ in endpoint.events()] == [
        "install_started",
        "install_progress",
        "install_progress",
    ]


def wait_for_progress(endpoint: FakeEndpoint, step: str) -> None:
    count = {"bootstrap-base": 1, "pkgsel": 2}[step]
    deadline = time.monotonic() + FRAGMENT_DEADLINE_SECONDS
    while sum(event == "install_progress" for event, _ in endpoint.events()) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no progress for {step}: {endpoint.events()}")
        time.sleep(0.1)


def wait_for_event(endpoint: FakeEndpoint, wanted: str) -> str | None:
    """The message of the first ``wanted`` report; fails after a generous deadline."""
    deadline = time.monotonic() + FRAGMENT_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        for event, message in endpoint.events():
            if event == wanted:
                return message
        time.sleep(0.1)
    pytest.fail(f"no {wanted} report after {FRAGMENT_DEADLINE_SECONDS} s: {endpoint.events()}")


def test_debian_late_command_removes_debconf_values_from_the_syslog(installer, endpoint):
    """d-i copies its syslog into the installed system: no value (password hash) is left."""
    commands, _ = debian_fragments(endpoint)
    code, output = installer.run(commands["preseed/early_command"], busybox_tools=True)
    assert code == 0, output
    syslog = installer.root / "var/log/syslog"
    syslog.write_text(SYSLOG)

    code, output = installer.run(commands["preseed/late_command"], busybox_tools=True)

    assert code == 0, output
    scrubbed = syslog.read_text()
    assert "secret" not in scrubbed
    assert "debconf: --> SET passwd/user-password-crypted [value removed]" in scrubbed
    assert "debconf: <-- [reply removed]" in scrubbed
    assert "Menu item 'choose-mirror' selected" in scrubbed
    assert len(scrubbed.splitlines()) == len(SYSLOG.splitlines())


def test_debian_late_command_reports_its_own_failure(installer, endpoint):
    """late_command stops the watcher, so a failure there is reported by late itself."""
    commands, _ = debian_fragments(endpoint)
    code, output = installer.run(commands["preseed/early_command"], busybox_tools=True)
    assert code == 0, output
    shutil.rmtree(installer.root / "target")  # nothing installed: the unit cannot be written

    code, output = installer.run(commands["preseed/late_command"], busybox_tools=True)

    assert code != 0, output
    assert endpoint.events()[-1] == (
        "install_failed",
        "late_command could not set up the first-boot report",
    )

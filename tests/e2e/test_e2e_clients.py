"""End to end with clients nobody on this team wrote, against ``provisioner serve``.

1. cloud-init's own ``phone_home`` module (Debian's ``cloud-init``, run by the system Python
   through ``clients/cloudinit_phone_home.py``) posts the host keys of a freshly installed
   node: the node becomes active, the ``first_boot`` event holds what cloud-init sent, and
   the server log holds none of the keys.
2. The served ``report.sh``, run by ``/bin/sh`` with real curl and by busybox ``sh`` with only
   busybox ``wget``, reports an install while the server is stopped and restarted on the
   same port and database: the reports sent while it is down are retried, spooled and
   flushed first by the next call, and every event arrives exactly once, in order.

Both run in token mode (``REPORT_AUTH=token``) with the report token the boot minted. A tool
that is not installed skips its test with the reason (``make e2e-deps`` installs them all).
"""

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import NamedTuple
from urllib.parse import urlencode

import pytest
from paths import TESTS_DIR
from serverproc import ServerProcess
from serverproc import sqlite_settings
from serverproc import start_server
from workflowfiles import write_test_workflow

pytestmark = pytest.mark.e2e

CLIENTS_DIR = TESTS_DIR / "clients"
PHONE_HOME_DRIVER = CLIENTS_DIR / "cloudinit_phone_home.py"
#: Debian's cloud-init is a package of the system Python, not of the project's venv.
SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT_TIMEOUT_SECONDS = 30

WORKFLOW_ID = "e2e-clients"
TOKEN_IN_CMDLINE = re.compile(r"\btoken=([A-Za-z0-9_-]+)")

#: Environment variables clients honour that must not leak into a loopback test.
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}

#: Host keys used when ``ssh-keygen`` is not installed (public halves of throwaway keys).
FALLBACK_HOST_KEYS = {
    "rsa": "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+gXOzgYi0avoDHcup7WGNAth7ZVxmpFz7oQ4eK5C+MiK8"
    "SWbP4x5zOhegvZkF5snzpFEytqQp6MCWbBPn0IbEIj2hbScX85eKUlhQBZXWcLYAGmz3D+NbYSBcD+WZ94MS2/0sPA"
    "RbN736FOt0dLtUY5l72DREfIujSaiun3qzLw== root@fallback\n",
    "ecdsa": "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBC8yMUo1"
    "kDUuTva7Rm+v19xwSZHe8py5U9ymsjsmxuZqwAl9fdmxDM+O13ixeNjUjLNfXloHPXxQye0lSA+bwhY= "
    "root@fallback\n",
    "ed25519": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmpBb4yVRnHrchybbD9mj38WCGCYYheCUVvKEBmreJp "
    "root@fallback\n",
}

#: Commands report.sh runs; the busybox toolbox links each of them (and wget) to busybox.
REPORT_SCRIPT_TOOLS = (
    "sh",
    "awk",
    "cat",
    "date",
    "dirname",
    "head",
    "mkdir",
    "mv",
    "od",
    "printf",
    "rm",
    "sed",
    "sleep",
    "tr",
)


@pytest.fixture
def client_workflows(tmp_path: Path) -> Path:
    directory = tmp_path / "workflows"
    directory.mkdir()
    write_test_workflow(
        directory,
        WORKFLOW_ID,
        description="The workflow the real-client end-to-end tests install",
        cmdline="console=ttyS0 node=${node_id} report_url=${report_url} token=${report_token}",
    )
    return directory


def client_environment(**variables: str) -> dict[str, str]:
    """``os.environ`` without proxies or ``PROVISIONER_*`` settings, plus ``variables``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in PROXY_VARIABLES and not key.startswith("PROVISIONER_")
    }
    return env | variables


def node(server: ServerProcess, ref: str) -> dict[str, Any]:
    status, _, body = server.get(f"/api/v1/nodes/{ref}")
    assert status == 200, body
    return body["data"]


def boot_into_install(server: ServerProcess, mac: str, hostname: str) -> tuple[str, str]:
    """Register a node, queue it and boot it; return its id and the report token minted.

    The token is read back from the installer's kernel command line, where the workflow
    puts ``${report_token}``, as an installer would.
    """
    status, _, body = server.post_json(
        "/api/v1/nodes", {"mac_address": mac, "hostname": hostname, "workflow_id": WORKFLOW_ID}
    )
    assert status == 201, body
    node_id = body["data"]["id"]
    status, _, body = server.patch_json(f"/api/v1/nodes/{node_id}/state", {"state": "pending"})
    assert status == 200, body
    boot = server.get(f"/api/v1/boot?{urlencode({'mac': mac})}")
    assert boot.status == 200, boot
    found = TOKEN_IN_CMDLINE.search(boot.text)
    assert found, f"no token=${{report_token}} in the boot script:\n{boot.text}"
    assert node(server, node_id)["state"] == "installing"
    return node_id, found.group(1)


def send_report(server: ServerProcess, mac: str, token: str, event: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"mac_address": mac, "event": event}
    status, _, answer = server.post_json("/api/v1/report", body, headers=headers)
    assert status == 200, answer


def events_oldest_first(server: ServerProcess, node_id: str) -> list[dict[str, Any]]:
    """Every event of one node from the event stream, following its cursor."""
    found: list[dict[str, Any]] = []
    cursor = 0
    while True:
        query = urlencode({"node": node_id, "since": cursor, "limit": 500})
        status, _, body = server.get(f"/api/v1/events?{query}")
        assert status == 200, body
        found += body["data"]
        if not body["data"] or body["next_cursor"] == cursor:
            return found
        cursor = body["next_cursor"]


def run_client(
    command: Sequence[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_SECONDS,
        check=False,
    )


# -- 1. cloud-init phone_home ---------------------------------------------------------------


def require_cloud_init() -> None:
    """Skip unless the system Python can import cloud-init's phone_home module."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found: Debian's cloud-init needs it (make e2e-deps)")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import cloudinit.config.cc_phone_home"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        error = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        pytest.skip(
            f"Debian's cloud-init is not installed for {SYSTEM_PYTHON} (make e2e-deps): {error}"
        )


def host_keys(directory: Path) -> dict[str, str]:
    """Write ``ssh_host_<type>_key.pub`` files into ``directory``; return their texts.

    Fresh keys from ``ssh-keygen`` when it is installed, else fixed throwaway ones.
    """
    directory.mkdir()
    keys = {}
    for key_type, fallback in FALLBACK_HOST_KEYS.items():
        path = directory / f"ssh_host_{key_type}_key"
        if shutil.which("ssh-keygen"):
            command = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "root@e2e"]
            subprocess.run([*command, "-f", str(path)], check=True, timeout=30)
        else:
            path.with_suffix(".pub").write_text(fallback)
        keys[f"pub_key_{key_type}"] = path.with_suffix(".pub").read_text()
    return keys


def test_cloud_init_phone_home_activates_the_node_and_stores_its_host_keys(
    tmp_path, client_workflows
):
    require_cloud_init()
    keys = host_keys(tmp_path / "ssh")
    mac, instance_id = "52:54:00:c1:00:01", "iid-e2e-phone-home"
    # DEBUG, so that "the keys are never logged" covers debug logging too.
    settings = {"WORKFLOWS_DIR": client_workflows, "REPORT_AUTH": "token", "LOG_LEVEL": "DEBUG"}
    with start_server(tmp_path, **settings) as server:
        node_id, token = boot_into_install(server, mac, "node-e2e")
        send_report(server, mac, token, "install_complete")
        assert node(server, node_id)["state"] == "installed"

        url = f"{server.url}/api/v1/nodes/{node_id}/phone-home?token={token}"
        command = [SYSTEM_PYTHON, str(PHONE_HOME_DRIVER), "--url", url]
        command += ["--keys-dir", str(tmp_path / "ssh"), "--work-dir", str(tmp_path / "cloud")]
        command += ["--instance-id", instance_id, "--local-hostname", "node-e2e.lab.example"]
        result = run_client(command, client_environment(), tmp_path)
        assert result.returncode == 0, f"cloud-init phone_home failed:\n{result.stderr}"

        assert node(server, node_id)["state"] == "active"
        first_boots = [
            event
            for event in events_oldest_first(server, node_id)
            if event["event_type"] == "first_boot"
        ]
    assert len(first_boots) == 1, first_boots
    metadata = first_boots[0]["metadata"]
    assert metadata["instance_id"] == instance_id
    assert metadata["hostname"] == "node-e2e"
    assert metadata["fqdn"] == "node-e2e.lab.example"
    for field, text in keys.items():
        assert metadata[field].strip() == text.strip(), field
    log = server.log_text()
    for field, text in keys.items():
        key_body = text.split()[1]
        assert key_body not in log, f"{field} appears in the server log {server.log_path}"


# -- 2. report.sh with curl and with busybox wget --------------------------------------------


class Toolbox(NamedTuple):
    """How one client runs report.sh: the shell, the PATH and how it downloads a file."""

    shell: list[str]
    path: str
    #: The download command, completed by the target file and the URL.
    download: list[str]


def curl_toolbox(tmp_path: Path) -> Toolbox:
    """``/bin/sh`` with the machine's PATH, where curl is found first."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (make e2e-deps)")
    return Toolbox(["/bin/sh"], os.environ.get("PATH", "/usr/bin:/bin"), ["curl", "-fsS", "-o"])


def busybox_toolbox(tmp_path: Path) -> Toolbox:
    """A PATH holding only busybox applets, so ``command -v curl`` fails and wget is used."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (make e2e-deps)")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=False)
    applets = set(listing.stdout.split())
    missing = sorted({"wget", *REPORT_SCRIPT_TOOLS} - applets)
    if missing:
        pytest.skip(f"this busybox lacks applets report.sh needs: {', '.join(missing)}")
    bin_dir = tmp_path / "busybox-bin"
    bin_dir.mkdir()
    for tool in ("wget", *REPORT_SCRIPT_TOOLS):
        (bin_dir / tool).symlink_to(busybox)
    return Toolbox([str(bin_dir / "sh")], str(bin_dir), [str(bin_dir / "wget"), "-q", "-O"])


TOOLBOXES = {"curl": curl_toolbox, "busybox-wget": busybox_toolbox}

REPORTS_BEFORE_STOP = [
    ("install_started", "", "", ""),
    *[("install_progress", "in_progress", f"step {n}", str(n)) for n in (10, 20, 30, 40, 50)],
]
#: Sent while the server is down; the quotes and the tab check the spool keeps JSON intact.
REPORTS_WHILE_DOWN = [
    ("install_progress", "in_progress", 'step 60 "while down"', "60"),
    ("install_progress", "in_progress", "step 70\twhile down", "70"),
]
REPORTS_AFTER_RESTART = [
    ("install_progress", "in_progress", "step 80", "80"),
    ("install_complete", "success", "installed by report.sh", ""),
]
#: report.sh's json_string folds a tab into a space.
EXPECTED_MESSAGES = {"step 70\twhile down": "step 70 while down"}


def expected_events() -> list[tuple[str, str | None, int | None]]:
    """``(event_type, message, progress)`` of every report the test sends, in order."""
    expected = []
    for event, _, message, progress in (
        REPORTS_BEFORE_STOP + REPORTS_WHILE_DOWN + REPORTS_AFTER_RESTART
    ):
        message = EXPECTED_MESSAGES.get(message, message)
        expected.append((event, message or None, int(progress) if progress else None))
    return expected


class Reporter:
    """Runs the downloaded ``provisioner-report`` the way an installer would."""

    def __init__(self, toolbox: Toolbox, script: Path, spool: Path) -> None:
        self.toolbox = toolbox
        self.script = script
        self.spool = spool
        # No URL, MAC or token here: the copy the server served has them built in.
        self.env = client_environment(
            PATH=toolbox.path, PROVISIONER_SPOOL=str(spool), PROVISIONER_RETRIES="2"
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command = [*self.toolbox.shell, str(self.script), *args]
        return run_client(command, self.env | env, self.script.parent)

    def send(self, reports: list[tuple[str, str, str, str]], *, server_up: bool) -> None:
        """Run one call per report (empty trailing arguments dropped).

        Each must exit 0; it must deliver while the server is up and spool while it is down.
        """
        for report in reports:
            args = list(report)
            while args and not args[-1]:
                args.pop()
            result = self.run(*args)
            assert result.returncode == 0, f"provisioner-report {args}: {result.stderr}"
            spooled = "spooled" in result.stderr
            state = "up" if server_up else "down"
            assert spooled != server_up, (
                f"provisioner-report {args} {'spooled' if spooled else 'did not spool'} with "
                f"the server {state}; its stderr:\n{result.stderr}"
            )

    def spooled(self) -> list[str]:
        if not self.spool.exists():
            return []
        return [line for line in self.spool.read_text().splitlines() if line]


def download_report_script(
    toolbox: Toolbox, server: ServerProcess, mac: str, token: str, target: Path
) -> Path:
    url = f"{server.url}/api/v1/report.sh?{urlencode({'mac': mac, 'token': token})}"
    result = run_client([*toolbox.download, str(target), url], client_environment(), target.parent)
    assert result.returncode == 0, f"downloading {url}: {result.stderr}"
    assert target.read_text().startswith("#!/bin/sh")
    return target


@pytest.mark.parametrize("client", sorted(TOOLBOXES))
def test_report_script_delivers_every_event_once_across_a_server_restart(
    tmp_path, client_workflows, client
):
    toolbox = TOOLBOXES[client](tmp_path)
    mac = "52:54:00:c1:00:02"
    env = sqlite_settings(tmp_path, WORKFLOWS_DIR=client_workflows, REPORT_AUTH="token")
    first = ServerProcess(env, tmp_path, name="server")
    restarted = None
    try:
        first.start()
        node_id, token = boot_into_install(first, mac, "node-report")
        script = download_report_script(toolbox, first, mac, token, tmp_path / "report.sh")
        reporter = Reporter(toolbox, script, tmp_path / "spool" / "reports.spool")

        reporter.send(REPORTS_BEFORE_STOP, server_up=True)
        assert len(events_oldest_first(first, node_id)) == len(REPORTS_BEFORE_STOP)
        # Token mode is really on: the same script with a wrong token is refused, not spooled.
        refused = reporter.run("heartbeat", PROVISIONER_TOKEN="not-the-token")
        assert refused.returncode == 1, f"a wrong token was not refused: {refused.stderr}"
        assert "HTTP 401" in refused.stderr
        assert first.stop() is not None

        reporter.send(REPORTS_WHILE_DOWN, server_up=False)
        assert len(reporter.spooled()) == len(REPORTS_WHILE_DOWN), reporter.spooled()

        restarted = ServerProcess(env, tmp_path, name="server-restarted", port=first.port)
        restarted.start()
        assert len(events_oldest_first(restarted, node_id)) == len(REPORTS_BEFORE_STOP)
        reporter.send(REPORTS_AFTER_RESTART, server_up=True)

        assert reporter.spooled() == []
        final = node(restarted, node_id)
        events = events_oldest_first(restarted, node_id)
    finally:
        first.stop()
        if restarted is not None:
            restarted.stop()

    received = [(event["event_type"], event["message"], event["progress"]) for event in events]
    assert received == expected_events()
    event_ids = [event["event_id"] for event in events]
    assert all(event_ids) and len(set(event_ids)) == len(event_ids), event_ids
    assert not [event for event in events if (event["effect"] or "").startswith("ignored")]
    assert final["state"] == "installed"

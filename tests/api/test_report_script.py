"""``GET /api/v1/report.sh``: the ``provisioner-report`` POSIX sh helper installers run.

The copy served has the report URL, and with ``?mac=``/``?token=`` the node's MAC and report
token, filled in as shell-quoted defaults; anything that does not look like a MAC or a token
is dropped, never pasted into the script. The script is then run the way an installer runs
it: by dash (Debian's /bin/sh) with curl, and by busybox with only busybox wget (the Debian
installer), against ``provisioner serve`` in a subprocess.
"""

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hostile import HOSTILE_SCRIPT_VALUES
from serverproc import ServerProcess
from serverproc import start_server
from workflowfiles import write_test_workflow

SERVER = "http://prov.test:8080"
MAC = "52:54:00:5c:00:01"
TOKEN = "Abc_-123" + "x" * 40
DASH = "/usr/bin/dash"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: What report.sh runs besides the shell's builtins; busybox links each of them.
SCRIPT_TOOLS = ("sh awk cat cut date dirname head mkdir mv od rm sed sleep tr wget").split()
_macs = itertools.count(0x10)


@pytest.fixture
def backend() -> str:
    """The script is rendered from the request and the settings; the node reports it sends are
    stored by code tested on both databases elsewhere: one database is enough here."""
    return "sqlite"


def served_script(client, **params) -> str:
    response = client.get("/api/v1/report.sh", query_string=params)
    assert response.status_code == 200
    assert response.mimetype == "text/x-shellscript"
    text = response.get_data(as_text=True)
    assert text.startswith("#!/bin/sh\n")
    return text


def defaults(script: str, directory: Path) -> dict[str, str]:
    """What the shell makes of the script's default settings (its assignments, run by dash).

    They run with no ``PROVISIONER_*`` variable set, in an empty folder under ``directory``:
    a default that executed something would leave a file there, which fails the test.
    """
    assignments = [
        line for line in script.splitlines() if line.startswith(("REPORT_URL=", "MAC=", "TOKEN="))
    ]
    assert len(assignments) == 3, assignments
    program = "\n".join(assignments) + '\nprintf "%s\\0" "$REPORT_URL" "$MAC" "$TOKEN"\n'
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROVISIONER_")}
    sandbox = directory / "sandbox"
    sandbox.mkdir()
    result = subprocess.run(
        [DASH, "-c", program], capture_output=True, text=True, cwd=sandbox, env=env, check=True
    )
    assert list(sandbox.iterdir()) == [], "a default ran a command"
    url, mac, token, _ = result.stdout.split("\0")
    return {"url": url, "mac": mac, "token": token}


# -- the served copy ---------------------------------------------------------------------------


def test_defaults_are_the_report_url_mac_and_token(client, tmp_path):
    script = served_script(client, mac=MAC, token=TOKEN)

    assert defaults(script, tmp_path) == {
        "url": f"{SERVER}/api/v1/report",
        "mac": MAC,
        "token": TOKEN,
    }


def test_mac_is_normalised_to_lower_case(client, tmp_path):
    script = served_script(client, mac=MAC.upper())

    assert defaults(script, tmp_path)["mac"] == MAC


def test_without_parameters_only_the_url_is_filled_in(client, tmp_path):
    """The MAC is then found on the machine and the token comes from the environment."""
    script = served_script(client)

    assert defaults(script, tmp_path) == {"url": f"{SERVER}/api/v1/report", "mac": "", "token": ""}


def test_environment_overrides_the_defaults(client, tmp_path):
    script = served_script(client, mac=MAC, token=TOKEN)
    program = "\n".join(
        line for line in script.splitlines() if line.startswith(("REPORT_URL=", "MAC=", "TOKEN="))
    )
    env = {
        "PATH": os.environ["PATH"],
        "PROVISIONER_REPORT_URL": "http://other/api/v1/report",
        "PROVISIONER_MAC": "52:54:00:00:00:02",
        "PROVISIONER_TOKEN": "from-env",
    }

    result = subprocess.run(
        [DASH, "-c", program + '\necho "$REPORT_URL $MAC $TOKEN"'],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )

    assert result.stdout == "http://other/api/v1/report 52:54:00:00:00:02 from-env\n"


#: Through the endpoint and dash, one of each; every value: tests/unit/test_report_script.py.
@pytest.mark.parametrize(
    ("param", "value"), [("mac", HOSTILE_SCRIPT_VALUES[0]), ("token", HOSTILE_SCRIPT_VALUES[2])]
)
def test_hostile_mac_or_token_is_dropped_not_injected(client, tmp_path, param, value):
    """A value that is not a MAC or a token leaves the default empty and runs nothing."""
    script = served_script(client, **{param: value})

    values = defaults(script, tmp_path)

    assert values[param] == ""
    assert "PWNED" not in script


@pytest.mark.parametrize("mac", ["52-54-00-5c-00-01", "5254005c0001", "52:54:00:5c:00", "zz"])
def test_mac_in_another_form_is_dropped(client, tmp_path, mac):
    """Only the canonical ``aa:bb:..`` form is baked in (the installer gets it that way)."""
    assert defaults(served_script(client, mac=mac), tmp_path)["mac"] == ""


@pytest.fixture
def hostile_server_url() -> str:
    return "http://prov.test:8080/a b'c$(touch PWNED)`touch PWNED2`"


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """``SERVER_URL`` replaced by the ``hostile_server_url`` fixture where a test asks."""
    if "hostile_server_url" in request.fixturenames:
        return app_config | {"SERVER_URL": request.getfixturevalue("hostile_server_url")}
    return app_config


def test_report_url_is_shell_quoted(client, tmp_path, hostile_server_url):
    """Even a ``SERVER_URL`` full of shell syntax reaches the script as a literal string."""
    script = served_script(client)

    values = defaults(script, tmp_path)

    assert values["url"] == hostile_server_url + "/api/v1/report"


SHELLS = {
    "sh": ["sh", "-n"],
    "dash": [DASH, "-n"],
    "bash-posix": ["bash", "--posix", "-n"],
    "busybox": ["busybox", "sh", "-n"],
}


@pytest.mark.parametrize("shell", list(SHELLS))
def test_served_script_parses(client, tmp_path, shell):
    command = SHELLS[shell]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{command[0]} is not installed")
    path = tmp_path / "report.sh"
    path.write_text(served_script(client, mac=MAC, token=TOKEN))

    result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr


# -- running it against a real server ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``provisioner serve`` in token mode with one workflow, shared by this module."""
    directory = tmp_path_factory.mktemp("report-script")
    workflows = directory / "workflows"
    workflows.mkdir()
    write_test_workflow(
        workflows,
        "sh-os",
        kernel_path="${server}/files/vmlinuz",
        initrd_path="${server}/files/initrd.img",
        cmdline="console=ttyS0 report_token=${report_token}",
    )
    with start_server(directory, WORKFLOWS_DIR=str(workflows), REPORT_AUTH="token") as server:
        yield server


def installing_node(server: ServerProcess) -> tuple[str, str]:
    """A new node served its installer; (its MAC, its report token)."""
    mac = f"52:54:00:5c:01:{next(_macs):02x}"
    created = server.post_json("/api/v1/nodes", {"mac_address": mac, "workflow_id": "sh-os"})
    assert created.status == 201, created
    pending = server.patch_json(f"/api/v1/nodes/{mac}/state", {"state": "pending"})
    assert pending.status == 200, pending
    script = server.get(f"/api/v1/boot?mac={mac}").text
    token = re.search(r"report_token=(\S+)", script).group(1)
    return mac, token


def fetch_script(server: ServerProcess, directory: Path, mac: str, token: str) -> Path:
    """Download the helper as an installer does, with the node's MAC and token built in."""
    response = server.get(f"/api/v1/report.sh?mac={mac}&token={token}")
    assert response.status == 200, response
    path = directory / "provisioner-report"
    path.write_bytes(response.body)
    path.chmod(0o755)
    return path


def run_report(
    command: list[str], directory: Path, *args: str, path: str | None = None
) -> subprocess.CompletedProcess:
    """Run the helper with a clean environment: only PATH and a spool in ``directory``."""
    env = {
        "PATH": path or os.environ["PATH"],
        "PROVISIONER_SPOOL": str(directory / "spool"),
        "PROVISIONER_RETRIES": "2",
    }
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def events(server: ServerProcess, mac: str, event_type: str | None = None) -> list[dict]:
    """The node's events (of ``event_type``), oldest first."""
    response = server.get(f"/api/v1/nodes/{mac}/events?limit=500")
    assert response.status == 200, response
    found = reversed(response.body["data"])
    return [event for event in found if event_type in (None, event["event_type"])]


@pytest.mark.e2e
def test_dash_with_curl_delivers_one_report_with_an_event_id(server, tmp_path):
    mac, token = installing_node(server)
    script = fetch_script(server, tmp_path, mac, token)

    result = run_report([DASH, str(script)], tmp_path, "install_started", "in_progress", "go", "5")

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "spool").exists()
    started = events(server, mac, "install_started")
    assert len(started) == 1, started
    event = started[0]
    assert UUID.match(event["event_id"]), event
    assert (event["status"], event["message"], event["progress"]) == ("in_progress", "go", 5)


MESSAGES = {
    "quotes": ("he said \"done\" and 'left'", "he said \"done\" and 'left'"),
    "backslashes": ("C:\\path\\to \\n not a newline \\", "C:\\path\\to \\n not a newline \\"),
    "newlines": ("line one\nline two\n\nline four", "line one\nline two\n\nline four"),
    "tabs-and-crs": ("a\tb\r\nc", "a b \nc"),
    "control-bytes": ("bell\x07 escape\x1b[31m end", "bell escape[31m end"),
    "shell-syntax": ("$(touch PWNED) `id` ${HOME} $$", "$(touch PWNED) `id` ${HOME} $$"),
    "json-syntax": (
        '{"event": "install_complete"}, "x": [1]',
        '{"event": "install_complete"}, "x": [1]',
    ),
    "unicode": ("grüße ✓ 日本", "grüße ✓ 日本"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(MESSAGES))
def test_message_is_json_escaped(server, tmp_path, case):
    """Quotes, backslashes and newlines arrive as sent; other control bytes are dropped."""
    sent, stored = MESSAGES[case]
    mac, token = installing_node(server)
    script = fetch_script(server, tmp_path, mac, token)

    result = run_report(
        [DASH, str(script)], tmp_path, "install_progress", "in_progress", sent, "40"
    )

    assert result.returncode == 0, result.stderr
    progress = [
        event for event in events(server, mac) if event["event_type"] == "install_progress"
    ]
    assert [event["message"] for event in progress] == [stored]
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.e2e
def test_refused_report_exits_1_and_is_not_spooled(server, tmp_path):
    """A 4xx (here a wrong token) is final: retrying or spooling would not help."""
    mac, _ = installing_node(server)
    script = fetch_script(server, tmp_path, mac, "wrong-token-" + "x" * 40)

    result = run_report([DASH, str(script)], tmp_path, "install_complete")

    assert result.returncode == 1
    assert "HTTP 401" in result.stderr
    assert not (tmp_path / "spool").exists()
    assert [event["event_type"] for event in events(server, mac)] == []


@pytest.mark.e2e
def test_usage_error_exits_2_and_sends_nothing(server, tmp_path):
    mac, token = installing_node(server)
    script = fetch_script(server, tmp_path, mac, token)

    no_event = run_report([DASH, str(script)], tmp_path)
    bad_progress = run_report([DASH, str(script)], tmp_path, "install_progress", "", "", "4O")

    assert (no_event.returncode, bad_progress.returncode) == (2, 2)
    assert events(server, mac) == []


def busybox_path(directory: Path) -> str:
    """A PATH of busybox applets only: no curl, so the helper falls back to busybox wget."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (make e2e-deps)")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    missing = set(SCRIPT_TOOLS) - set(listing.stdout.split())
    if missing:
        pytest.skip(f"this busybox lacks {', '.join(sorted(missing))}")
    bin_dir = directory / "busybox-bin"
    bin_dir.mkdir()
    for tool in SCRIPT_TOOLS:
        (bin_dir / tool).symlink_to(busybox)
    return str(bin_dir)


@pytest.mark.e2e
def test_busybox_sh_with_busybox_wget_delivers_the_report(server, tmp_path):
    """The Debian installer's case: busybox ash, busybox wget, no curl."""
    path = busybox_path(tmp_path)
    mac, token = installing_node(server)
    script = fetch_script(server, tmp_path, mac, token)
    message = 'from "busybox"\nwith a second line'

    result = run_report(
        [f"{path}/sh", str(script)],
        tmp_path,
        "install_progress",
        "in_progress",
        message,
        "20",
        path=path,
    )

    assert result.returncode == 0, result.stderr
    spool = tmp_path / "spool"
    assert not spool.exists() or spool.read_text() == "", spool.read_text()
    progress = [
        event for event in events(server, mac) if event["event_type"] == "install_progress"
    ]
    assert [(event["message"], event["progress"]) for event in progress] == [(message, 20)]

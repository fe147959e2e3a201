"""Hostile values rendered into every shipped example, checked by the installers' own parsers.

Each payload tries to run the command ``pwned`` (or to add a kickstart section, a preseed
line, a YAML key) from inside a value. Every variable a template sees holds it at once, and
each rendered file must still parse with the real parser (pykickstart, cloud-init's schema
check, ``debconf-set-selections -c``, ``sh -n``), with the same structure as the benign
rendering and the hostname carried as data. The shell parts then run under busybox ash in a
chroot where every command is a recording stub (tests/trapshell.py): they may run only
commands the benign rendering runs, and never ``pwned``.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trapshell
import yaml
from paths import EXAMPLE_WORKFLOWS

from provisioner.domain.escaping import preseed_value
from provisioner.domain.escaping import shell_word
from provisioner.domain.escaping import yaml_scalar
from provisioner.domain.install_configs import environment
from provisioner.domain.install_configs import render_config
from provisioner.domain.workflows import WorkflowStore
from provisioner.domain.workflows import render
from provisioner.domain.workflows import sample_variables

HOSTNAME = "node-7"
MAC = "52:54:00:e0:00:01"
HOSTILE = {
    "newline": f"{HOSTNAME}\npwned\n",
    "carriage-return": f"{HOSTNAME}\rpwned",
    "semicolon": f"{HOSTNAME};pwned;",
    "command-substitution": f"{HOSTNAME}$(pwned)",
    "backticks": f"{HOSTNAME}`pwned`",
    "single-quotes": f"{HOSTNAME}'$(pwned)'",
    "double-quotes": f'{HOSTNAME}"$(pwned)"',
    "and-pipe": f"{HOSTNAME} && pwned | pwned",
    "ipv6-zone": "fe80::1%eth0$(pwned)",
    "kickstart-section": f"{HOSTNAME}\n%pre\npwned\n%end\n",
    "preseed-line": f"{HOSTNAME}\nd-i preseed/late_command string pwned",
    "yaml-structure": f'{HOSTNAME}"\n  early-commands: [pwned]\n#',
    "unicode-line-breaks": f"{HOSTNAME}\u2028pwned\x85pwned",
    "trailing-backslash": f"{HOSTNAME}\\",
}
# What a one-line context keeps of a value: kickstart and shell lines cannot hold a line
# break (Python's splitlines, which pykickstart uses, breaks at all of these).
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(value: str) -> str:
    return _LINE_BREAKS.sub("_", value)


def hostile_variables(payload: str) -> dict[str, str]:
    """Every variable a template sees, holding ``payload``."""
    return dict.fromkeys(sample_variables(), payload)


def benign_variables() -> dict[str, str]:
    return sample_variables() | {"hostname": HOSTNAME}


def render_example(workflow_id: str, name: str, variables: dict[str, str]) -> str:
    workflow = WorkflowStore(EXAMPLE_WORKFLOWS).load(workflow_id)
    return render_config(environment(EXAMPLE_WORKFLOWS), workflow, name, variables)


@pytest.fixture
def trap(tmp_path: Path) -> trapshell.TrapShell:
    reason = trapshell.why_not_available()
    if reason:
        pytest.skip(reason)
    return trapshell.TrapShell(tmp_path / "root")


def assert_syntax(script: str, shell: str = "sh") -> None:
    """``shell -n``: the script parses (nothing runs)."""
    result = subprocess.run(
        [*shell.split(), "-n"], input=script, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{shell} -n: {result.stderr}\n{script}"


def assert_runs_only_what_was_meant(trap, hostile: str, benign: str, *args: str) -> None:
    """The hostile shell code runs no command the benign code does not, and never pwned."""
    expected = trap.run(benign, *args).names
    run = trap.run(hostile, *args)
    assert trapshell.SENTINEL not in run.names, (run.calls, hostile)
    assert run.names <= expected, (run.names - expected, hostile)


# -- kickstart (Rocky 9) ---------------------------------------------------------------------


def kickstart(text: str) -> Any:
    """pykickstart's handler of the text, parsed for RHEL 9."""
    from pykickstart.parser import KickstartParser
    from pykickstart.version import RHEL9
    from pykickstart.version import makeVersion

    parser = KickstartParser(makeVersion(RHEL9))
    parser.readKickstartFromString(text)
    return parser.handler


def kickstart_outline(handler: Any) -> tuple:
    """The commands given, the packages and each script's header: all but the values."""
    commands = sorted(name for name, cmd in handler.commands.items() if getattr(cmd, "seen", 0))
    scripts = [(s.type, s.inChroot, s.errorOnFail, s.interp, s.logfile) for s in handler.scripts]
    return commands, str(handler.packages), scripts


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_rocky_kickstart_keeps_hostile_values_as_data(trap, payload):
    pytest.importorskip("pykickstart", reason="pykickstart is not installed (pip install it)")
    benign = kickstart(render_example("rocky-9", "ks.cfg", benign_variables()))

    handler = kickstart(render_example("rocky-9", "ks.cfg", hostile_variables(payload)))

    assert kickstart_outline(handler) == kickstart_outline(benign)
    assert handler.network.network[0].hostname == one_line(payload)
    for script, meant in zip(handler.scripts, benign.scripts, strict=True):
        assert_syntax(script.script, "bash")  # anaconda runs them with bash
        assert_runs_only_what_was_meant(trap, script.script, meant.script)


# -- preseed and hooks (Debian 12) -----------------------------------------------------------


def preseed_entries(text: str) -> list[tuple[str, str, str, str]]:
    """(owner, question, type, value) of each line, read the way debconf-set-selections
    reads them: a trailing backslash continues a line, ``#`` starts a comment."""
    entries = []
    for line in re.sub(r"\\\n", "", text).split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^\s*(\S+)\s+(\S+)\s+(\S+)(?:\s(.*))?", line.rstrip())
        assert match, line
        owner, question, kind, value = match.groups()
        entries.append((owner, question, kind, (value or "").strip()))
    return entries


def assert_debconf_accepts(text: str, tmp_path: Path) -> None:
    checker = shutil.which("debconf-set-selections")
    if checker is None:
        pytest.skip("debconf-set-selections is not installed (package debconf)")
    path = tmp_path / "preseed.cfg"
    path.write_text(text)
    result = subprocess.run([checker, "-c", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr, result.stderr


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_debian_preseed_and_hooks_keep_hostile_values_as_data(trap, tmp_path, payload):
    benign = preseed_entries(render_example("debian-12", "preseed.cfg", benign_variables()))
    text = render_example("debian-12", "preseed.cfg", hostile_variables(payload))

    assert_debconf_accepts(text, tmp_path)
    entries = preseed_entries(text)
    assert [entry[:3] for entry in entries] == [entry[:3] for entry in benign]
    # The host name is on the kernel command line (debian-12.yaml), not in the preseed.
    assert not {question for _, question, _, _ in entries} & {
        "netcfg/hostname",
        "netcfg/get_hostname",
    }
    for (_, question, _, command), meant in zip(entries, benign, strict=True):
        if question.endswith("_command"):
            assert_syntax(command)
            assert_runs_only_what_was_meant(trap, command, meant[3])


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_debian_hooks_keep_hostile_values_as_data(trap, payload):
    benign = render_example("debian-12", "hooks.sh", benign_variables())
    hooks = render_example("debian-12", "hooks.sh", hostile_variables(payload))

    for shell in ("sh", "dash", "busybox sh"):  # the installer runs it with busybox sh
        if shutil.which(shell.split()[0]):
            assert_syntax(hooks, shell)
    for phase in ("early", "partman", "late"):
        assert_runs_only_what_was_meant(trap, hooks, benign, phase)


# -- cloud-init NoCloud seed (Ubuntu 24.04) --------------------------------------------------


def shape(value: Any) -> Any:
    """A YAML document with every scalar replaced by its type: its structure only."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


#: ``cloud-init schema -c FILE`` (the same function: ``handle_schema_args``) for one path per
#: line of stdin, answering a JSON line per path: one process instead of one per file, as
#: starting cloud-init cost most of this module's time.
CLOUD_INIT_SCHEMA_LOOP = """
import contextlib, io, json, sys
from cloudinit.config.schema import get_parser, handle_schema_args
for line in sys.stdin:
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            handle_schema_args("cloud-init schema", get_parser().parse_args(["-c", line[:-1]]))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    print(json.dumps([code, out.getvalue(), err.getvalue()]), flush=True)
"""


@pytest.fixture(scope="module")
def cloud_init_schema() -> Iterator[Callable[[Path], tuple[int, str]]]:
    """Check a cloud-config file with cloud-init's own schema check; (exit code, output)."""
    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.skip("cloud-init is not installed (make e2e-deps)")
    python = Path(cloud_init).read_text().partition("\n")[0].removeprefix("#!").strip()
    loop = subprocess.Popen(
        [python, "-c", CLOUD_INIT_SCHEMA_LOOP],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def check(path: Path) -> tuple[int, str]:
        assert "\n" not in str(path)
        loop.stdin.write(f"{path}\n")
        loop.stdin.flush()
        code, out, err = json.loads(loop.stdout.readline())
        return code, out + err

    try:
        yield check
    finally:
        loop.stdin.close()
        loop.wait(timeout=60)


def assert_cloud_init_accepts(check: Callable[[Path], tuple[int, str]], text: str, path: Path):
    """cloud-init's own schema check of a cloud-config."""
    path.write_text(text)
    code, output = check(path)
    assert code == 0, output
    assert "Valid cloud-config" in output


def seed(variables: dict[str, str]) -> dict[str, Any]:
    """The example's NoCloud seed files, parsed."""
    user_data = render_example("ubuntu-24.04", "user-data", variables)
    assert user_data.startswith("#cloud-config\n")
    return {
        "user-data": yaml.safe_load(user_data),
        "meta-data": yaml.safe_load(render_example("ubuntu-24.04", "meta-data", variables)),
        "vendor-data": yaml.safe_load(render_example("ubuntu-24.04", "vendor-data", variables)),
    }


def commands(user_data: dict[str, Any]) -> list[str]:
    autoinstall = user_data["autoinstall"]
    return [
        cmd
        for key in ("early-commands", "late-commands", "error-commands")
        for cmd in autoinstall[key]
    ]


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_ubuntu_seed_keeps_hostile_values_as_data(trap, tmp_path, payload, cloud_init_schema):
    benign = seed(benign_variables())
    variables = hostile_variables(payload)

    hostile = seed(variables)

    assert shape(hostile) == shape(benign)
    assert hostile["user-data"]["autoinstall"]["identity"]["hostname"] == payload
    assert hostile["meta-data"]["local-hostname"] == payload
    nested = "#cloud-config\n" + yaml.safe_dump(hostile["user-data"]["autoinstall"]["user-data"])
    assert_cloud_init_accepts(
        cloud_init_schema, render_example("ubuntu-24.04", "user-data", variables), tmp_path / "u"
    )
    assert_cloud_init_accepts(cloud_init_schema, nested, tmp_path / "nested")
    for command, meant in zip(
        commands(hostile["user-data"]), commands(benign["user-data"]), strict=True
    ):
        assert_syntax(command)
        assert_runs_only_what_was_meant(trap, command, meant)


# -- the filters and the default guard -------------------------------------------------------


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_filters_round_trip_through_their_parsers(payload):
    """``sh`` gives one shell word, ``yaml`` the exact string, ``preseed`` one line."""
    word = subprocess.run(
        ["sh", "-c", f"printf %s {shell_word(payload)}"], capture_output=True, text=True
    )
    assert word.stdout == one_line(payload)
    assert yaml.safe_load(f"key: {yaml_scalar(payload)}") == {"key": payload}
    assert "\n" not in preseed_value(payload) and not preseed_value(payload).endswith("\\")


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_an_unfiltered_value_prints_only_plain_characters(tmp_path, payload):
    """A template that forgets a filter still prints nothing a parser would act on."""
    (tmp_path / "t.j2").write_text("{{ hostname }}|{{ hostname | sh }}")
    env = environment(tmp_path)

    unfiltered, filtered = env.get_template("t.j2").render(hostname=payload).split("|", 1)

    assert re.fullmatch(r"[A-Za-z0-9._:/@+%\[\]-]*", unfiltered), unfiltered
    assert filtered == shell_word(payload)


def test_plain_values_print_unchanged(tmp_path):
    """Validated node fields are plain: the guard leaves them exactly as they are."""
    (tmp_path / "t.j2").write_text("{{ ip }} {{ server }} {{ hostname }}")
    values = {"ip": "fe80::1%eth0", "server": "http://[fd00::1]:8080", "hostname": "web-1.example"}

    assert environment(tmp_path).get_template("t.j2").render(values) == " ".join(values.values())


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_kernel_command_line_values_are_plain(payload):
    """``${hostname}`` on a kernel command line cannot add an iPXE command or argument."""
    line = render("host=${hostname} ip=${ip}", {"hostname": payload, "ip": payload})

    assert re.fullmatch(r"host=[A-Za-z0-9._:/@+%\[\]-]* ip=[A-Za-z0-9._:/@+%\[\]-]*", line)

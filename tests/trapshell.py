"""Run installer shell code under busybox ash, in a chroot where every command is a trap.

The chroot holds busybox, its libraries and ``/stubs``: PATH is ``/stubs`` only, and each
stub records its name and arguments in ``/trap.log`` and does nothing else. A command with
no stub fails with ``not found``, which is recorded too. So a run tells every command the
code tried to run, and nothing it runs can reach the host (``cat > /etc/...`` writes in the
chroot). A test compares what a hostile rendering ran with what the benign rendering ran.
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = shutil.which("busybox")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
UNSHARE = shutil.which("unshare")
#: The sentinel every hostile payload tries to run.
SENTINEL = "pwned"
#: Commands the example installers run (and the sentinel); each becomes a recording stub.
STUBS = (
    "bash cat chmod chown cp curl cut debconf-set grep head in-target install kill "
    "list-devices logger mkdir mv rm sed sh sleep systemctl tail tee touch wget "
    f"{SENTINEL}"
).split()
#: Stubs that fail, so polling loops (``while sleep 10``) end and greps find nothing.
FAILING = {"sleep", "grep"}
_NOT_FOUND = re.compile(r"(?:^|: )([^\s:]+): not found$", re.MULTILINE)


def why_not_available() -> str | None:
    """Why a trap shell cannot run here, or None."""
    if BUSYBOX is None:
        return "busybox is not installed (make e2e-deps)"
    if os.geteuid() != 0 and UNSHARE is None:
        return "chroot needs root or unshare (user namespaces)"
    return None


@dataclass
class Run:
    """What one run of shell code tried to execute."""

    calls: list[str]  # "name arg..." of each stub invoked
    missing: list[str]  # commands that were not found
    stderr: str

    @property
    def names(self) -> set[str]:
        """Every command name it tried to run."""
        return {call.split(" ", 1)[0] for call in self.calls} | set(self.missing)


class TrapShell:
    """A chroot under ``root`` in which shell code runs with only recording stubs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for directory in ("bin", "stubs", "tmp", "dev"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "dev" / "null").write_text("")  # a plain file will do for redirections
        self._copy(Path(BUSYBOX), root / "bin" / "busybox")
        for library in self._libraries():
            self._copy(library, root / library.relative_to("/"))
        for name in STUBS:
            stub = root / "stubs" / name
            status = 1 if name in FAILING else 0
            record = "printf '%s\\0' \"${0##*/} $*\" >> /trap.log"
            stub.write_text(f"#!/bin/busybox ash\n{record}\nexit {status}\n")
            stub.chmod(0o755)

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.resolve(), target)

    @staticmethod
    def _libraries() -> list[Path]:
        """The shared libraries busybox needs (none when it is static)."""
        result = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True, check=False)
        return [Path(path) for path in re.findall(r"(/\S+) \(0x", result.stdout)]

    def run(self, script: str, *args: str) -> Run:
        """Run ``script`` with ``args`` (as ``$1``...) and wait for its background jobs."""
        (self.root / "script.sh").write_text(script)
        log = self.root / "trap.log"
        log.write_bytes(b"")
        prefix = [] if os.geteuid() == 0 else [UNSHARE, "--map-root-user"]
        command = [*prefix, CHROOT, str(self.root), "/bin/busybox", "ash", "-c"]
        result = subprocess.run(
            [*command, ". /script.sh; wait", "script.sh", *args],
            env={"PATH": "/stubs", "HOME": "/"},
            capture_output=True,
            text=True,
            timeout=120,  # only turns a hang into a failure
            check=False,
        )
        calls = [call for call in log.read_text(errors="replace").split("\0") if call]
        return Run(calls, _NOT_FOUND.findall(result.stderr), result.stderr)

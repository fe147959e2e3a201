"""dnsmasq as a child of ``provisioner serve``: its log lines in ours, restarted if it dies.

dnsmasq runs in the foreground (``--keep-in-foreground``), logging to its stderr, which a
thread reads line by line into the ``provisioner.pxe.dnsmasq`` logger. It counts as up once
it logs ``started``, which it does after binding its sockets; a dnsmasq that exits before
that (port 67 taken, no permission, no such interface) stops ``serve`` with one line that
says what to do. Once up, a dnsmasq that exits is logged and started again, after a delay
that doubles while it keeps failing. The child is asked for SIGTERM should ``serve`` die
(``PR_SET_PDEATHSIG``); a dnsmasq started as root drops to ``nobody``, which clears that, so
there it is the service manager that ends both (systemd's control group).
"""

import collections
import ctypes
import ipaddress
import logging
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from provisioner.pxe.dnsmasq_conf import PxeError
from provisioner.pxe.dnsmasq_conf import PxePlan
from provisioner.pxe.dnsmasq_conf import plan_from_config
from provisioner.pxe.dnsmasq_conf import render

log = logging.getLogger("provisioner.pxe")
dnsmasq_log = logging.getLogger("provisioner.pxe.dnsmasq")

START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
FIRST_RESTART_DELAY_SECONDS = 1.0
MAX_RESTART_DELAY_SECONDS = 60.0
#: A dnsmasq that ran this long before it died is restarted after the first delay again.
STABLE_SECONDS = 60.0
#: Lines of dnsmasq's output kept for an error message.
TAIL_LINES = 20
#: Where Debian puts dnsmasq (``/usr/sbin`` is not on every user's PATH).
SYSTEM_DIRECTORIES = "/usr/sbin:/sbin:/usr/local/sbin"
CONFIG_FILE = "pxe-dnsmasq.conf"

_LINE = re.compile(r"^(dnsmasq[\w-]*)\[\d+\]: ?(.*)$")
_STARTED = re.compile(r"^dnsmasq(\[\d+\])?: started, version")
_TROUBLE = re.compile(r"failed|cannot|unknown interface|no address range|missing", re.I)
_PR_SET_PDEATHSIG = 1

#: What to do about dnsmasq's start-up errors, by a piece of its message.
_HINTS = (
    (
        "Address already in use",
        "another DHCP/TFTP server on this host holds port 67, 69 or 4011 (a system dnsmasq, "
        "isc-dhcp-server, tftpd): stop it, or set PXE = false and give that dnsmasq the "
        "lines of `provisioner pxe config`",
    ),
    (
        "ermission denied",
        "ports 67, 69 and 4011 need root or the capabilities CAP_NET_BIND_SERVICE, "
        "CAP_NET_ADMIN and CAP_NET_RAW (AmbientCapabilities= in the systemd unit)",
    ),
    (
        "missing required capability",
        "give the service CAP_NET_BIND_SERVICE, CAP_NET_ADMIN and CAP_NET_RAW "
        "(AmbientCapabilities= in the systemd unit)",
    ),
    ("unknown interface", "check PXE_INTERFACE against `ip -brief address`"),
)


def find_dnsmasq(setting: str) -> str:
    """The dnsmasq executable ``PXE_DNSMASQ`` names, looked up on PATH and in sbin."""
    found = shutil.which(setting)
    if found is None and "/" not in setting:
        found = shutil.which(setting, path=SYSTEM_DIRECTORIES)
    if found is None:
        raise PxeError(
            f"config key PXE_DNSMASQ: {setting!r} not found; install Debian's "
            "dnsmasq-base (apt install dnsmasq-base) or name the executable"
        )
    return found


def dnsmasq_command(executable: str, config_file: Path) -> list[str]:
    """The command line of a supervised dnsmasq: foreground, logging to stderr."""
    return [executable, "--keep-in-foreground", "--log-facility=-", f"--conf-file={config_file}"]


def explain_failure(output: list[str], interface: str) -> str:
    """One line for a dnsmasq that would not start: its own words and what to do."""
    problem = next(
        (line for line in reversed(output) if "dnsmasq" in line and "compile time" not in line),
        output[-1] if output else "no output",
    )
    problem = _LINE.sub(r"\2", problem.strip()).removeprefix("dnsmasq: ")
    hint = next((hint for piece, hint in _HINTS if piece in problem), "see its log lines above")
    return f"PXE on PXE_INTERFACE={interface}: dnsmasq could not start: {problem}; {hint}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class DnsmasqSupervisor:
    """Start, watch and stop one dnsmasq."""

    def __init__(
        self,
        command: list[str],
        interface: str,
        *,
        start_timeout: float = START_TIMEOUT_SECONDS,
        first_restart_delay: float = FIRST_RESTART_DELAY_SECONDS,
    ) -> None:
        self.command = command
        self.interface = interface
        self.start_timeout = start_timeout
        self.first_restart_delay = first_restart_delay
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._started = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader: threading.Thread | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The running dnsmasq's process id."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start dnsmasq and wait until it is up; ``PxeError`` says why it is not."""
        problem = self._run_once()
        if problem is not None:
            raise PxeError(problem)
        self._watcher = threading.Thread(target=self._watch, name="pxe-dnsmasq", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Stop dnsmasq (SIGTERM, then SIGKILL) and the threads that watch it."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is not None:
            _end(process)
        for thread in (self._watcher, self._reader):
            if thread is not None and thread is not threading.current_thread():
                thread.join(STOP_TIMEOUT_SECONDS)

    def _run_once(self) -> str | None:
        """Start one dnsmasq and wait for it to be up; the reason if it is not."""
        process = self._spawn()
        if process is None:
            return None
        deadline = time.monotonic() + self.start_timeout
        while not self._started.wait(0.05):
            if process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(STOP_TIMEOUT_SECONDS)  # every line it wrote is read
                return explain_failure(list(self._tail), self.interface)
            if time.monotonic() > deadline:
                _end(process)
                return (
                    f"PXE on PXE_INTERFACE={self.interface}: dnsmasq did not start within "
                    f"{self.start_timeout:g} s"
                )
        log.info("PXE: dnsmasq %d serves proxy DHCP and TFTP on %s", process.pid, self.interface)
        return None

    def _spawn(self) -> subprocess.Popen[str] | None:
        """Start dnsmasq and the thread that reads its output (nothing once stopping)."""
        with self._lock:
            if self._stopping.is_set():
                return None
            self._started.clear()
            self._tail.clear()
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                preexec_fn=_die_with_parent,
            )
            self._reader = threading.Thread(
                target=self._forward, args=(self._process,), name="pxe-dnsmasq-log", daemon=True
            )
            self._reader.start()
            return self._process

    def _forward(self, process: subprocess.Popen[str]) -> None:
        """Copy dnsmasq's output into the log, one record per line."""
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if not line:
                continue
            self._tail.append(line)
            if _STARTED.match(line):
                self._started.set()
            match = _LINE.match(line)
            text = f"{match.group(1)}: {match.group(2)}" if match else line
            level = logging.WARNING if _TROUBLE.search(text) else logging.INFO
            dnsmasq_log.log(level, "%s", text)
        process.stdout.close()

    def _watch(self) -> None:
        """Wait for dnsmasq to exit; unless stopping, report it and start another."""
        delay = self.first_restart_delay
        while True:
            process = self._process
            assert process is not None
            began = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - began > STABLE_SECONDS:
                delay = self.first_restart_delay
            log.error(
                "PXE: dnsmasq exited with code %s (%s); starting it again in %g s",
                code,
                self._tail[-1] if self._tail else "no output",
                delay,
            )
            while not self._stopping.wait(delay):
                self.restarts += 1
                problem = self._run_once()
                if problem is None:
                    break
                delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
                log.error("%s; trying again in %g s", problem, delay)
            else:
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)


def _end(process: subprocess.Popen[str]) -> None:
    """SIGTERM ``process``, SIGKILL it if it lingers, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_reachable(plan: PxePlan, config: Mapping[str, Any], host: str) -> None:
    """Refuse a chain URL the machines could not reach: the server listens elsewhere."""
    if config["SERVER_URL"] or host in ("", "0.0.0.0", "::", str(plan.address.ip)):
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    where = "loopback only" if loopback else f"{host} only"
    raise PxeError(
        f"PXE on PXE_INTERFACE={plan.interface}: the chain URL {plan.chain_url} would not "
        f"answer, serve listens on {where}: run serve --host 0.0.0.0 (or --host "
        f"{plan.address.ip}), or set SERVER_URL to where machines reach this server"
    )


def start_pxe(
    config: Mapping[str, Any], directory: str, host: str, port: int
) -> DnsmasqSupervisor | None:
    """With ``PXE = true``: write the dnsmasq config into ``directory``, start dnsmasq."""
    if not config["PXE"]:
        return None
    plan = plan_from_config(config, port)
    check_reachable(plan, config, host)
    executable = find_dnsmasq(config["PXE_DNSMASQ"])
    path = Path(directory) / CONFIG_FILE
    path.write_text(render(plan))
    for label in plan.missing:
        log.info("PXE: no iPXE build for %s in %s", label, plan.tftp_root)
    supervisor = DnsmasqSupervisor(dnsmasq_command(executable, path), plan.interface)
    supervisor.start()
    log.info("PXE: iPXE clients chain to %s", plan.chain_url)
    return supervisor

"""``provisioner serve --workers 2``: two processes share the port and stop together."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serverproc import ServerProcess
from serverproc import server_environment
from serverproc import sqlite_settings

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path):
    """Both workers start and serve; requests spread over them all succeed; SIGTERM stops all."""
    settings = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    server = ServerProcess(settings, tmp_path, name="workers", extra_args=["--workers", "2"])
    with server:
        workers = children_of(server.pid)
        assert len(workers) == 2
        assert server.wait_for_serving(2) == 2

        def boot(index: int) -> int:
            return server.get(f"/api/v1/boot?mac=52:54:00:77:00:{index:02x}").status

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(boot, range(64)))
        assert statuses == [200] * 64
        assert server.get("/api/v1/nodes?limit=1000").body["total"] == 64
        senders = [child for worker in workers for child in children_of(worker)]
        assert len(senders) == 2  # each worker's asset sender process
        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60  # only catches a hang
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.returncode == 0
        assert children_of(server.pid or -1) == []
        assert all(not os.path.exists(f"/proc/{pid}") for pid in workers + senders)
    assert "Traceback" not in server.log_text()


LEADER = re.compile(r"scheduler: this process \(pid (\d+)\) runs the scheduled jobs")
STANDBY = "stands by"


def wait_for_log(server: ServerProcess, done, timeout: float = 30.0) -> str:
    """Poll the server's log until ``done(text)``; return the text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log_text()
        if done(text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"not in the log after {timeout:g} s:\n{server.log_tail()}")


def test_one_worker_runs_the_scheduled_jobs_and_another_takes_over(tmp_path):
    """Of three workers one holds the scheduler lease; killed, a stand-by takes it over."""
    settings = sqlite_settings(tmp_path, REPORT_AUTH="open", SWEEP_INTERVAL_SECONDS=0.2)
    server = ServerProcess(
        server_environment(settings), tmp_path, name="lease", extra_args=["--workers", "3"]
    )
    with server:
        assert server.wait_for_serving(3) == 3
        text = wait_for_log(server, lambda t: len(LEADER.findall(t)) + t.count(STANDBY) == 3)
        leaders = LEADER.findall(text)
        assert len(leaders) == 1 and text.count(STANDBY) == 2, text
        os.kill(int(leaders[0]), signal.SIGKILL)
        text = wait_for_log(server, lambda t: len(LEADER.findall(t)) == 2)
        successor = LEADER.findall(text)[1]
        assert successor != leaders[0] and int(successor) in children_of(server.pid or -1)
        assert len(LEADER.findall(server.log_text())) == 2


def cpus_of(pid: int) -> set[frozenset[int]]:
    """The CPU sets the threads of process ``pid`` may run on (one entry if they agree)."""
    return {
        frozenset(os.sched_getaffinity(int(thread))) for thread in os.listdir(f"/proc/{pid}/task")
    }


def pinned_cpus(pid: int) -> frozenset[int]:
    """The one CPU set all threads of serving process ``pid`` share; its asset sender
    process (``assets.sendloop``) is let onto every CPU on purpose: the kernel's copying
    for it is what spreads."""
    allowed = frozenset(os.sched_getaffinity(0))
    [sender] = [child for child in children_of(pid) if "sendloop" in cmdline(child)]
    assert cpus_of(sender) == {allowed}
    [cpus] = cpus_of(pid)
    return cpus


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as command:
        return command.read().replace(b"\0", b" ").decode()


needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="pinning needs at least two CPUs to choose from"
)


@needs_two_cpus
def test_serve_keeps_every_thread_of_the_process_on_one_cpu(tmp_path):
    settings = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    with ServerProcess(settings, tmp_path, name="pinned") as server:
        assert server.get("/api/v1/boot?mac=52:54:00:77:01:01").status == 200
        cpus = pinned_cpus(server.pid)
        assert len(cpus) == 1
        assert cpus <= os.sched_getaffinity(0)
        assert f"CPU {next(iter(cpus))})" in server.log_text()


@needs_two_cpus
def test_no_pin_cpu_leaves_the_process_on_every_cpu(tmp_path):
    settings = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    server = ServerProcess(settings, tmp_path, name="unpinned", extra_args=["--no-pin-cpu"])
    with server:
        assert server.get("/api/v1/boot?mac=52:54:00:77:01:02").status == 200
        assert cpus_of(server.pid) == {frozenset(os.sched_getaffinity(0))}


@needs_two_cpus
def test_workers_are_pinned_to_different_cpus(tmp_path):
    settings = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    server = ServerProcess(
        settings, tmp_path, name="pinned-workers", extra_args=["--workers", "2"]
    )
    with server:
        assert server.wait_for_serving(2) == 2
        workers = children_of(server.pid)
        pinned = [pinned_cpus(worker) for worker in workers]
        assert all(len(cpus) == 1 for cpus in pinned)
        assert len(set(pinned)) == 2


def pin_in_a_child(call: str) -> tuple[int, set[int], int]:
    """Run ``call`` (a pin_to_one_cpu call) in a fresh interpreter; return what it saw."""
    code = (
        "import json, os; from provisioner.serve import pin_to_one_cpu, _current_cpu\n"
        f"cpu = {call}\n"
        "print(json.dumps([cpu, sorted(os.sched_getaffinity(0)), _current_cpu()]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    cpu, affinity, running_on = json.loads(out.stdout)
    return cpu, set(affinity), running_on


@needs_two_cpus
def test_without_an_index_the_process_stays_on_the_cpu_it_runs_on():
    """The child moves to the last allowed CPU, allows all again, then pins: it stays."""
    allowed = sorted(os.sched_getaffinity(0))
    move_then_pin = (
        f"os.sched_setaffinity(0, {{{allowed[-1]}}}) or "
        f"os.sched_setaffinity(0, {allowed}) or pin_to_one_cpu()"
    )
    cpu, affinity, running_on = pin_in_a_child(move_then_pin)
    assert affinity == {cpu} == {running_on} == {allowed[-1]}


@needs_two_cpus
def test_an_index_picks_that_allowed_cpu_round_robin():
    allowed = sorted(os.sched_getaffinity(0))
    for index in (1, len(allowed) + 1):
        cpu, affinity, running_on = pin_in_a_child(f"pin_to_one_cpu({index})")
        assert cpu == allowed[index % len(allowed)]
        assert affinity == {cpu} == {running_on}

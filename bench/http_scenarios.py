"""Boot and report throughput against the hello ceiling, measured in the same run.

1. boot: GET /api/v1/boot for known MACs of active nodes (the local-boot path), 64 conns;
2. report: heartbeat / install_progress for 1,000 installing nodes, 64 and 256 conns.
The server runs in its default report-token mode; each request carries its node's token.
"""

import subprocess
import sys
import time
from pathlib import Path

from bench.populate import add_nodes
from bench.populate import bench_token
from bench.server import ServerProcess
from bench.server import free_port
from bench.server import migrated_database
from bench.wrk import lua_list
from bench.wrk import run_wrk
from provisioner.timeutil import utcnow

THREADS = 16
SECONDS = 10
NODES = 1000

BOOT_LUA = """
math.randomseed(42)
request = function()
  return wrk.format("GET", "/api/v1/boot?mac=" .. macs[math.random(#macs)])
end
"""

REPORT_LUA = """
math.randomseed(7)
local events = {"heartbeat", "install_progress"}
request = function()
  local i = math.random(#macs)
  local event = events[math.random(2)]
  local body = '{"mac_address": "' .. macs[i] .. '", "event": "' .. event .. '"'
  if event == "install_progress" then
    body = body .. ', "progress": ' .. math.random(0, 100)
  end
  body = body .. '}'
  return wrk.format("POST", "/api/v1/report",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tokens[i]}, body)
end
"""


def hello_ceiling(workdir: Path) -> dict:
    """Requests per second of a minimal Flask app under waitress, same thread count."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.hello", str(port), str(THREADS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        script = 'request = function() return wrk.format("GET", "/hello") end\n'
        return run_wrk(
            f"http://127.0.0.1:{port}", script, workdir, connections=64, seconds=SECONDS
        )
    finally:
        process.terminate()
        process.wait(10)


def wait_for_workers(server: ServerProcess, count: int, timeout: float = 60) -> None:
    """Wait until ``count`` worker processes listen on the shared port.

    The kernel spreads a new connection over the sockets listening at that moment, and wrk
    opens all its connections at once: a worker that started late would get none of them.
    """
    deadline = time.monotonic() + timeout
    while server.log_text().count("provisioner: serving on") < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not start:\n{server.log_text()}")
        time.sleep(0.1)


def run(workdir: Path) -> dict:
    database, env = migrated_database(workdir, "http")
    now = utcnow()
    macs = add_nodes(database, active=NODES, installing=NODES, installing_since=now, now=now)
    active, installing = macs[:NODES], macs[NODES:]
    tokens = [bench_token(NODES + i) for i in range(NODES)]
    figures = {"hello": hello_ceiling(workdir)}
    with ServerProcess(env, workdir, name="http-server", threads=THREADS) as server:
        boot_script = lua_list("macs", active) + BOOT_LUA
        report_script = lua_list("macs", installing) + lua_list("tokens", tokens) + REPORT_LUA
        figures["boot_64"] = run_wrk(
            server.url, boot_script, workdir, connections=64, seconds=SECONDS
        )
        figures["report_64"] = run_wrk(
            server.url, report_script, workdir, connections=64, seconds=SECONDS
        )
        figures["report_256"] = run_wrk(
            server.url, report_script, workdir, connections=256, seconds=SECONDS
        )
    # The same with two processes sharing the port (serve --workers 2, SO_REUSEPORT).
    two = ServerProcess(
        env, workdir, name="http-2workers", threads=THREADS, extra_args=["--workers", "2"]
    )
    with two as server:
        wait_for_workers(server, 2)
        figures["boot_64_2_workers"] = run_wrk(
            server.url, boot_script, workdir, connections=64, seconds=SECONDS
        )
        figures["report_64_2_workers"] = run_wrk(
            server.url, report_script, workdir, connections=64, seconds=SECONDS
        )
    hello = figures["hello"]["rps"]
    figures["ratios"] = {
        "boot_vs_hello": round(figures["boot_64"]["rps"] / hello, 3),
        "report_vs_hello": round(figures["report_64"]["rps"] / hello, 3),
        "report_256_vs_64": round(figures["report_256"]["rps"] / figures["report_64"]["rps"], 3),
        "boot_2_workers_vs_hello": round(figures["boot_64_2_workers"]["rps"] / hello, 3),
        "report_2_workers_vs_hello": round(figures["report_64_2_workers"]["rps"] / hello, 3),
    }
    return figures

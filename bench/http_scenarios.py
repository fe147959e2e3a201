"""Boot and report throughput against the hello ceiling, measured in the same run.

1. boot: GET /api/v1/boot for known MACs of active nodes (the local-boot path), 64 conns;
2. report: heartbeat / install_progress for 1,000 installing nodes, 64 and 256 conns.
Each is measured ``ROUNDS`` times, in turn with the hello app; a figure is the median round's
and a ratio the median of the rounds' ratios.
The server runs in its default report-token mode; each request carries its node's token.
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.populate import add_nodes
from bench.populate import bench_token
from bench.populate import mark_seen
from bench.server import ServerProcess
from bench.server import free_port
from bench.server import migrated_database
from bench.wrk import lua_list
from bench.wrk import run_wrk
from provisioner.timeutil import utcnow

THREADS = 16
SECONDS = 5
NODES = 1000
#: Rounds of hello, boot and report measured one after another, so that each ratio compares
#: windows seconds apart: on a shared host the speed of the machine drifts within minutes.
ROUNDS = 5

HELLO_LUA = 'request = function() return wrk.format("GET", "/hello") end\n'

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


@contextmanager
def hello_app() -> Iterator[str]:
    """A minimal Flask app under waitress with the same thread count: the ceiling."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.hello", str(port), str(THREADS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def median_round(rounds: list[dict]) -> dict:
    """The round with the median throughput, with every round's req/s and p99 added."""
    ordered = sorted(rounds, key=lambda figures: figures["rps"])
    return ordered[len(ordered) // 2] | {
        "rounds_rps": [figures["rps"] for figures in rounds],
        "rounds_p99_ms": [figures["p99_ms"] for figures in rounds],
    }


def median_ratio(over: list[dict], under: list[dict]) -> float:
    """The median over rounds of ``over``'s throughput against ``under``'s in the same round."""
    ratios = sorted(a["rps"] / b["rps"] for a, b in zip(over, under, strict=True))
    return round(ratios[len(ratios) // 2], 3)


def measure_rounds(
    workdir: Path, database: Path, **runs: tuple[str, str, int]
) -> dict[str, list[dict]]:
    """wrk on each of ``runs`` (url, Lua script, connections) in turn, ``ROUNDS`` times over.

    Before a boot run the machines are marked as just seen: the rounds take minutes, and a
    machine seen over a minute ago has its ``last_seen_at`` written by its next boot.
    """
    rounds: dict[str, list[dict]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, (url, script, connections) in runs.items():
            if name.startswith("boot"):
                mark_seen(database, utcnow())
            rounds[name].append(
                run_wrk(url, script, workdir, connections=connections, seconds=SECONDS)
            )
    return rounds


def run(workdir: Path) -> dict:
    database, env = migrated_database(workdir, "http")
    now = utcnow()
    macs = add_nodes(database, active=NODES, installing=NODES, installing_since=now, now=now)
    active, installing = macs[:NODES], macs[NODES:]
    tokens = [bench_token(NODES + i) for i in range(NODES)]
    boot_script = lua_list("macs", active) + BOOT_LUA
    report_script = lua_list("macs", installing) + lua_list("tokens", tokens) + REPORT_LUA
    with hello_app() as hello_url:
        hello = (hello_url, HELLO_LUA, 64)
        with ServerProcess(env, workdir, name="http-server", threads=THREADS) as server:
            one = measure_rounds(
                workdir,
                database,
                hello=hello,
                boot_64=(server.url, boot_script, 64),
                report_64=(server.url, report_script, 64),
                report_256=(server.url, report_script, 256),
            )
        # The same with two processes sharing the port (serve --workers 2, SO_REUSEPORT).
        two_workers = ServerProcess(
            env, workdir, name="http-2workers", threads=THREADS, extra_args=["--workers", "2"]
        )
        with two_workers as server:
            # The kernel spreads a new connection over the sockets listening at that moment,
            # and wrk opens all its connections at once: a late worker would get none.
            if server.wait_for_serving(2, timeout=60) < 2:
                raise RuntimeError(f"2 workers did not start:\n{server.log_text()}")
            two = measure_rounds(
                workdir,
                database,
                hello=hello,
                boot_64_2_workers=(server.url, boot_script, 64),
                report_64_2_workers=(server.url, report_script, 64),
            )
    figures = {name: median_round(rounds) for name, rounds in one.items()}
    figures |= {name: median_round(rounds) for name, rounds in two.items() if name != "hello"}
    figures["hello_beside_2_workers"] = median_round(two["hello"])
    figures["ratios"] = {
        "boot_vs_hello": median_ratio(one["boot_64"], one["hello"]),
        "report_vs_hello": median_ratio(one["report_64"], one["hello"]),
        "report_256_vs_64": median_ratio(one["report_256"], one["report_64"]),
        "boot_2_workers_vs_hello": median_ratio(two["boot_64_2_workers"], two["hello"]),
        "report_2_workers_vs_hello": median_ratio(two["report_64_2_workers"], two["hello"]),
    }
    return figures

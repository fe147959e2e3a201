"""Boot and report throughput with 1,000 slow connections open, against the same without.

PXE firmware that gives up mid-request leaves connections that send half a request or
nothing. A third of the slow connections here send nothing, a third half a request line, a
third half a request line and then one byte a second. Each round measures boot and report
(64 wrk connections each, as in ``bench http``) alone, then again with 1,000 slow
connections freshly opened beside them; a ratio is the median of the rounds' ratios.
"""

import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager
from pathlib import Path

from bench.http_scenarios import BOOT_LUA
from bench.http_scenarios import NODES
from bench.http_scenarios import REPORT_LUA
from bench.http_scenarios import ROUNDS
from bench.http_scenarios import SECONDS
from bench.http_scenarios import THREADS
from bench.http_scenarios import median_ratio
from bench.http_scenarios import median_round
from bench.populate import add_nodes
from bench.populate import bench_token
from bench.populate import mark_seen
from bench.server import ServerProcess
from bench.server import migrated_database
from bench.wrk import lua_list
from bench.wrk import run_wrk
from provisioner.timeutil import utcnow

SLOW = 1000
CONNECTIONS = 64
HALF_REQUEST = b"GET /api/v1/boot?mac=02:00:00:00"
DRIP_SECONDS = 1.0
#: A boot on a new connection per request, as iPXE makes them (wrk reconnects after
#: ``Connection: close``): every request then waits for the server to accept it.
BOOT_CLOSE_LUA = BOOT_LUA.replace(
    '"/api/v1/boot?mac=" .. macs[math.random(#macs)])',
    ('"/api/v1/boot?mac=" .. macs[math.random(#macs)], {["Connection"] = "close"})'),
)
ACCEPT_TIMEOUT_SECONDS = 60


def allow_descriptors(count: int) -> None:
    """Raise this process's soft open-file limit to hold ``count`` sockets, or stop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + 256
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return
    if 0 <= hard < needed:
        raise SystemExit(f"bench slow needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def held_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds."""
    count = 0
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{entry}").startswith("socket:")
        except OSError:
            pass
    return count


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither answered nor closed ``sock``."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


@contextmanager
def slow_connections(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` slow connections to ``server``, accepted by it before this yields."""
    stop = threading.Event()
    with ExitStack() as stack:
        sockets = []
        for index in range(count):
            sock = stack.enter_context(socket.create_connection((server.host, server.port)))
            if index % 3:
                sock.sendall(HALF_REQUEST)
            sockets.append(sock)
        dripping = sockets[2::3]

        def drip() -> None:
            while not stop.wait(DRIP_SECONDS):
                for sock in dripping:
                    try:
                        sock.send(b"0")
                    except OSError:
                        pass  # closed by the server: the figure below shows it

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        stack.callback(dripper.join)
        stack.callback(stop.set)
        wait_until_accepted(server, count)
        yield sockets


def wait_until_accepted(server: ServerProcess, count: int) -> None:
    """Wait until ``server`` holds ``count`` connections besides its listening socket."""
    deadline = time.monotonic() + ACCEPT_TIMEOUT_SECONDS
    while held_sockets(server.pid) <= count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server accepted only {held_sockets(server.pid)} sockets")
        time.sleep(0.1)


def run(workdir: Path) -> dict:
    allow_descriptors(SLOW + 2 * CONNECTIONS)
    database, env = migrated_database(workdir, "slow")
    now = utcnow()
    macs = add_nodes(database, active=NODES, installing=NODES, installing_since=now, now=now)
    tokens = [bench_token(NODES + i) for i in range(NODES)]
    scripts = {
        "boot": lua_list("macs", macs[:NODES]) + BOOT_LUA,
        "boot_new_connections": lua_list("macs", macs[:NODES]) + BOOT_CLOSE_LUA,
        "report": lua_list("macs", macs[NODES:]) + lua_list("tokens", tokens) + REPORT_LUA,
    }
    rounds: dict[str, list[dict]] = {
        f"{name}_{when}": [] for when in ("alone", "beside_slow") for name in scripts
    }
    still: list[int] = []
    with ServerProcess(env, workdir, name="slow-server", threads=THREADS) as server:

        def measure(when: str) -> None:
            for name, script in scripts.items():
                if name.startswith("boot"):
                    mark_seen(database, utcnow())
                figures = run_wrk(
                    server.url, script, workdir, connections=CONNECTIONS, seconds=SECONDS
                )
                rounds[f"{name}_{when}"].append(figures)

        for _ in range(ROUNDS):
            measure("alone")
            with slow_connections(server, SLOW) as sockets:
                measure("beside_slow")
                still.append(sum(still_open(sock) for sock in sockets))
    figures = {name: median_round(values) for name, values in rounds.items()}
    figures["slow_connections"] = SLOW
    figures["slow_still_open_per_round"] = still
    figures["ratios"] = {
        "boot_beside_slow_vs_alone": median_ratio(
            rounds["boot_beside_slow"], rounds["boot_alone"]
        ),
        "report_beside_slow_vs_alone": median_ratio(
            rounds["report_beside_slow"], rounds["report_alone"]
        ),
        "boot_new_connections_beside_slow_vs_alone": median_ratio(
            rounds["boot_new_connections_beside_slow"], rounds["boot_new_connections_alone"]
        ),
    }
    return figures

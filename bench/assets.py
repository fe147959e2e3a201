"""Serving a 128 MB installer file: provisioner against nginx, side by side in one run.

nginx (Debian's nginx-light, ``sendfile on``, its default ``worker_processes auto``) and
``provisioner serve`` serve the same file from the same directory on loopback, each in a
session of its own (so a scheduling autogroup of its own, apart from the clients', as two
services would be). Each round:

1. 32, then 128 concurrent ``curl -o /dev/null`` processes each download the file once from
   one server, then from the other: aggregate throughput (bytes / wall time) and the
   server's CPU seconds (user + system, every thread and worker) per GB sent;
2. 32 curl processes download in a loop from one server while wrk measures boot and report
   throughput against provisioner (64 connections each, as ``bench http``), then the same
   while the loop downloads from nginx: what the downloads cost the request threads, and
   what the looping clients got meanwhile (whole downloads finished during each wrk run).

Which server goes first alternates from round to round. A figure is the median of the
rounds', a ratio the median of the rounds' ratios (each round's ratio is reported too).
Peak RSS is provisioner's VmHWM at the end, and its sender process's apart.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.http_scenarios import BOOT_LUA
from bench.http_scenarios import NODES
from bench.http_scenarios import REPORT_LUA
from bench.http_scenarios import SECONDS
from bench.http_scenarios import THREADS
from bench.populate import add_nodes
from bench.populate import bench_token
from bench.populate import mark_seen
from bench.server import ServerProcess
from bench.server import free_port
from bench.server import migrated_database
from bench.wrk import lua_list
from bench.wrk import run_wrk
from provisioner.timeutil import utcnow

FILE_MB = 128
CLIENTS = (32, 128)
LOOP_CLIENTS = 32
ROUNDS = 4
GB = 1e9
NGINX_CONFIG = """\
daemon off;
{user}
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /assets/ {{ alias {assets}/; }}
    }}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if path is None:
        raise SystemExit("nginx is not installed: apt-get install nginx-light (make e2e-deps)")
    return path


@contextmanager
def nginx(workdir: Path, assets: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """nginx serving ``assets`` at ``/assets/`` on loopback; yields its URL and process."""
    directory = workdir / "nginx"
    directory.mkdir()
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    config = directory / "nginx.conf"
    config.write_text(NGINX_CONFIG.format(user=user, dir=directory, port=port, assets=assets))
    with (directory / "stderr.log").open("ab") as log:
        process = subprocess.Popen(
            [nginx_binary(), "-p", str(directory), "-c", str(config), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
            # A session (and so a scheduling autogroup) of its own, as provisioner's server
            # has (ServerProcess): in the benchmark's session nginx would share the curl
            # clients' CPU share instead of competing with them, as provisioner must.
            start_new_session=True,
        )
    try:
        wait_listening(port)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def wait_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its children (nginx's workers)."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return pids + [int(child) for child in children]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children, all threads."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for each in tree_pids(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def curl_command(url: str) -> list[str]:
    return ["curl", "--silent", "--fail", "--noproxy", "*", "-o", "/dev/null", url]


def download_all(url: str, clients: int, size: int, pid: int) -> dict:
    """``clients`` curl processes download ``url`` at once; throughput and CPU per GB."""
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    processes = [subprocess.Popen(curl_command(url)) for _ in range(clients)]
    failed = sum(process.wait() != 0 for process in processes)
    seconds = time.monotonic() - started
    cpu = cpu_seconds(pid) - cpu_before
    sent = clients * size
    return {
        "clients": clients,
        "seconds": round(seconds, 2),
        "gbit_per_s": round(sent * 8 / seconds / GB, 2),
        "cpu_s_per_gb": round(cpu / (sent / GB), 3),
        "failed": failed,
    }


class Completions:
    """How many downloads of the loop have finished whole (counted under a lock)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1


@contextmanager
def looping_downloads(url: str, clients: int) -> Iterator[Completions]:
    """``clients`` threads each running curl on ``url`` again and again until the end;
    yields the count of downloads finished so far."""
    stop = threading.Event()
    running: list[subprocess.Popen] = []
    lock = threading.Lock()
    completions = Completions()

    def loop() -> None:
        while not stop.is_set():
            with lock:
                if stop.is_set():
                    return
                process = subprocess.Popen(curl_command(url))
                running.append(process)
            if process.wait() == 0:
                completions.add()
            with lock:
                running.remove(process)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # every client connected and sending
    try:
        yield completions
    finally:
        stop.set()
        with lock:
            for process in running:
                process.terminate()
        for thread in threads:
            thread.join(30)


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_ratio(over: list[dict], under: list[dict], key: str) -> float:
    """The median over rounds of ``over[key] / under[key]`` in the same round."""
    return round(median([a[key] / b[key] for a, b in zip(over, under, strict=True)]), 3)


def round_ratios(rounds: dict[str, list[dict]], prefix: str, key: str) -> list[float]:
    """provisioner's figure over nginx's in each round."""
    ours, theirs = rounds[f"{prefix}_provisioner"], rounds[f"{prefix}_nginx"]
    return [round(a[key] / b[key], 2) for a, b in zip(ours, theirs, strict=True)]


def run(workdir: Path) -> dict:
    assets = workdir / "assets"
    assets.mkdir()
    payload = assets / "installer.img"
    with payload.open("wb") as out:
        for _ in range(FILE_MB):
            out.write(os.urandom(1024 * 1024))
    size = payload.stat().st_size
    database, env = migrated_database(workdir, "assets", ASSETS_DIR=str(assets))
    now = utcnow()
    macs = add_nodes(database, active=NODES, installing=NODES, installing_since=now, now=now)
    tokens = [bench_token(NODES + i) for i in range(NODES)]
    boot_script = lua_list("macs", macs[:NODES]) + BOOT_LUA
    report_script = lua_list("macs", macs[NODES:]) + lua_list("tokens", tokens) + REPORT_LUA
    rounds: dict[str, list[dict]] = {}
    load_before = os.getloadavg()
    load_per_round: list[float] = []
    started = time.monotonic()
    with (
        ServerProcess(env, workdir, name="assets-server", threads=THREADS) as server,
        nginx(workdir, assets) as (nginx_url, nginx_process),
    ):
        ours = f"{server.url}/assets/installer.img"
        theirs = f"{nginx_url}/assets/installer.img"
        for round_number in range(ROUNDS):
            servers = [("provisioner", ours, server.pid), ("nginx", theirs, nginx_process.pid)]
            if round_number % 2:  # who goes first alternates: a drift in load cancels out
                servers.reverse()
            for clients in CLIENTS:
                for name, url, pid in servers:
                    figures = download_all(url, clients, size, pid)
                    rounds.setdefault(f"download_{clients}_{name}", []).append(figures)
            for name, url, _ in servers:
                with looping_downloads(url, LOOP_CLIENTS) as completions:
                    for kind, script in (("boot", boot_script), ("report", report_script)):
                        if kind == "boot":
                            mark_seen(database, utcnow())
                        before, started_wrk = completions.count, time.monotonic()
                        figures = run_wrk(
                            server.url, script, workdir, connections=64, seconds=SECONDS
                        )
                        done = completions.count - before
                        seconds = time.monotonic() - started_wrk
                        figures["downloads_gbit_per_s"] = round(done * size * 8 / seconds / GB, 2)
                        rounds.setdefault(f"{kind}_beside_{name}", []).append(figures)
            load_per_round.append(round(os.getloadavg()[0], 1))
        peak = peak_rss_mb(server.pid)
        # serve's own children: its asset sender process (assets.sendloop)
        sender_peak = sum(peak_rss_mb(pid) for pid in tree_pids(server.pid)[1:])
    figures: dict = {}
    ratios: dict = {}
    for clients in CLIENTS:
        ours_rounds = rounds[f"download_{clients}_provisioner"]
        theirs_rounds = rounds[f"download_{clients}_nginx"]
        for name, values in (("provisioner", ours_rounds), ("nginx", theirs_rounds)):
            figures[f"download_{clients}_{name}"] = {
                "gbit_per_s": median([v["gbit_per_s"] for v in values]),
                "cpu_s_per_gb": median([v["cpu_s_per_gb"] for v in values]),
                "rounds_gbit_per_s": [v["gbit_per_s"] for v in values],
                "failed": sum(v["failed"] for v in values),
            }
        ratios[f"throughput_{clients}_vs_nginx"] = median_ratio(
            ours_rounds, theirs_rounds, "gbit_per_s"
        )
    for kind in ("boot", "report"):
        ours_rounds = rounds[f"{kind}_beside_provisioner"]
        theirs_rounds = rounds[f"{kind}_beside_nginx"]
        figures[f"{kind}_beside_provisioner_rps"] = [v["rps"] for v in ours_rounds]
        figures[f"{kind}_beside_nginx_rps"] = [v["rps"] for v in theirs_rounds]
        # What the looping clients got meanwhile (whole downloads finished, so +-1 file)
        figures[f"{kind}_beside_provisioner_downloads_gbit_per_s"] = [
            v["downloads_gbit_per_s"] for v in ours_rounds
        ]
        figures[f"{kind}_beside_nginx_downloads_gbit_per_s"] = [
            v["downloads_gbit_per_s"] for v in theirs_rounds
        ]
        ratios[f"{kind}_beside_provisioner_vs_nginx"] = median_ratio(
            ours_rounds, theirs_rounds, "rps"
        )
    figures["provisioner_peak_rss_mb"] = peak
    figures["provisioner_sender_peak_rss_mb"] = round(sender_peak, 1)
    figures["file_mb"] = FILE_MB
    figures["load_average_before_after"] = [
        [round(x, 2) for x in load_before],
        [round(x, 2) for x in os.getloadavg()],
    ]
    figures["load_average_after_each_round"] = load_per_round
    figures["run_seconds"] = round(time.monotonic() - started)
    figures["ratios"] = ratios
    figures["ratios_per_round"] = {
        f"throughput_{clients}": round_ratios(rounds, f"download_{clients}", "gbit_per_s")
        for clients in CLIENTS
    } | {kind: round_ratios(rounds, f"{kind}_beside", "rps") for kind in ("boot", "report")}
    return figures

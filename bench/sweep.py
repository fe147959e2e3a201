"""Sweep benchmark: 100,000 nodes of which 10,000 stalled, swept by the running server's own
scheduler while report traffic goes on; reports the sweep time and the report latency."""

import re
import threading
import time
from datetime import timedelta
from pathlib import Path

from bench.load import percentile
from bench.load import report_body
from bench.load import run_load
from bench.populate import add_nodes
from bench.populate import bench_token
from bench.server import ServerProcess
from bench.server import migrated_database
from provisioner.timeutil import utcnow

SWEEP_LINE = re.compile(r"sweep: (\d+) stalled install\(s\) timed out .* in ([\d.]+) s")


def run(workdir: Path, *, nodes: int = 100_000, stalled: int = 10_000, threads: int = 16) -> dict:
    """Run the scenario in ``workdir`` and return its figures."""
    database, env = migrated_database(
        workdir, "sweep", INSTALL_TIMEOUT_MINUTES="60", SWEEP_INTERVAL_SECONDS="4"
    )
    now = utcnow()
    macs = add_nodes(
        database,
        active=nodes - stalled,
        installing=stalled,
        installing_since=now - timedelta(hours=2),
        now=now,
    )
    active = macs[: nodes - stalled]
    with ServerProcess(env, workdir, name="sweep-server") as server:
        stop = threading.Event()
        started = time.perf_counter()

        def heartbeat(worker: int, n: int):
            index = (worker * 7919 + n * 104729) % len(active)
            body = report_body(active[index], "heartbeat")
            return (
                "POST",
                "/api/v1/report",
                body,
                {"Authorization": f"Bearer {bench_token(index)}"},
            )

        loader = threading.Thread(
            target=lambda: results.append(
                run_load("127.0.0.1", server.port, threads, heartbeat, stop=stop)
            )
        )
        results: list = []
        loader.start()
        deadline = time.monotonic() + 120
        match = None
        while time.monotonic() < deadline and match is None:
            time.sleep(0.5)
            match = SWEEP_LINE.search(server.log_text())
        time.sleep(1.0)
        stop.set()
        loader.join()
    load = results[0]
    if match is None:
        raise RuntimeError("the server never logged a sweep:\n" + server.log_tail())
    sweep_seconds = float(match.group(2))
    all_latencies = load.latencies()
    return {
        "nodes": nodes,
        "stalled": stalled,
        "timed_out": int(match.group(1)),
        "sweep_seconds": round(sweep_seconds, 3),
        "reports": len(all_latencies),
        "report_errors": load.errors,
        "report_statuses": load.statuses,
        "report_p99_ms": round(percentile(all_latencies, 0.99) * 1000, 1),
        "report_max_ms": round(max(all_latencies, default=0) * 1000, 1),
        "duration_seconds": round(time.perf_counter() - started, 1),
    }

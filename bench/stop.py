"""Stop benchmark: how long ``provisioner serve`` takes to exit on SIGTERM.

The e2e tests only check that SIGTERM stops the server cleanly (exit code 0, nothing lost);
how fast is measured here. Each round starts a server with its scheduler running (sweeps
and webhook delivery on short intervals), answers a request, and times SIGTERM to exit,
next to the time the same server took to start, so the figure reads as a ratio.
"""

import signal
import statistics
import time
from pathlib import Path

from bench.server import ServerProcess
from bench.server import migrated_database

ROUNDS = 5


def one_round(workdir: Path, env: dict[str, str], number: int) -> tuple[float, float]:
    """Start, answer one request, SIGTERM: (seconds to start, seconds to stop)."""
    server = ServerProcess(env, workdir, name=f"stop-{number}")
    started = time.perf_counter()
    server.start()
    start_seconds = time.perf_counter() - started
    try:
        assert server.get("/api/v1/nodes").status == 200
        stopping = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        assert server.process is not None
        code = server.process.wait(60)
        stop_seconds = time.perf_counter() - stopping
    finally:
        server.stop()
    if code != 0:
        raise RuntimeError(f"exit code {code} on SIGTERM:\n{server.log_tail()}")
    return start_seconds, stop_seconds


def run(workdir: Path, *, rounds: int = ROUNDS) -> dict:
    """Run the scenario in ``workdir`` and return its figures."""
    webhooks = '[{"url": "http://127.0.0.1:9/unreachable", "events": ["state_changed"]}]'
    _, env = migrated_database(
        workdir,
        "stop",
        SWEEP_INTERVAL_SECONDS="0.2",
        WEBHOOKS=webhooks,
        WEBHOOK_INTERVAL_SECONDS="0.2",
    )
    timings = [one_round(workdir, env, number) for number in range(rounds)]
    starts = [start for start, _ in timings]
    stops = [stop for _, stop in timings]
    return {
        "rounds": rounds,
        "start_median_s": round(statistics.median(starts), 3),
        "stop_median_s": round(statistics.median(stops), 3),
        "stop_max_s": round(max(stops), 3),
        "stop_to_start_ratio": round(statistics.median(stops) / statistics.median(starts), 3),
    }

"""Boot storm: 2,000 machines, 200 at a time, each boot → install_started → 10 × progress →
install_complete → first_boot, in the server's default report-token mode.

Reports the time until every node is active, p99 per request type, the server's peak RSS,
and checks that the database holds exactly the events sent (none lost, none doubled).
"""

import http.client
import json
import re
import threading
import time
from pathlib import Path

from bench.load import percentile
from bench.populate import add_pending_nodes
from bench.server import ServerProcess
from bench.server import migrated_database
from bench.server import rows

NODES = 2000
CONCURRENCY = 200
THREADS = 16
TOKEN = re.compile(r"report_token=([A-Za-z0-9_-]+)")
WORKFLOW = """id: bench-os
name: Bench OS
kernel_path: /files/vmlinuz
initrd_path: /files/initrd
cmdline: console=ttyS0 report_url=${report_url} report_token=${report_token}
"""


class Machine:
    """One simulated machine: a new connection per request, as iPXE and ``curl`` in an
    installer make them, and latencies per request.

    (Holding one keep-alive connection per machine for its whole install made the first
    request of a machine wait for one of the server's ``connection_limit`` slots until another
    machine had finished: seconds of "boot" latency that no real installer sees.)
    """

    def __init__(self, port: int, mac: str, latencies: dict[str, list[float]]) -> None:
        self.port = port
        self.mac = mac
        self.latencies = latencies
        self.token = ""

    def _call(self, kind: str, method: str, path: str, body: dict | None = None) -> str:
        headers = {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        self.latencies[kind].append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"{kind} for {self.mac}: HTTP {response.status} {text[:200]}")
        return text

    def report(self, event: str, **extra: object) -> None:
        self._call(
            event, "POST", "/api/v1/report", {"mac_address": self.mac, "event": event, **extra}
        )

    def install(self) -> None:
        script = self._call("boot", "GET", f"/api/v1/boot?mac={self.mac}")
        self.token = TOKEN.search(script).group(1)
        self.report("install_started")
        for progress in range(10, 101, 10):
            self.report("install_progress", progress=progress)
        self.report("install_complete")
        self.report("first_boot", event_metadata={"os": "bench-os 1.0"})


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(workdir: Path) -> dict:
    workflows = workdir / "workflows"
    workflows.mkdir()
    (workflows / "bench-os.yaml").write_text(WORKFLOW)
    database, env = migrated_database(workdir, "storm", WORKFLOWS_DIR=str(workflows))
    macs = add_pending_nodes(database, NODES, workflow_id="bench-os")
    kinds = ["boot", "install_started", "install_progress", "install_complete", "first_boot"]
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    errors: list[str] = []
    queue = list(reversed(macs))
    lock = threading.Lock()

    with ServerProcess(env, workdir, name="storm-server", threads=THREADS) as server:

        def worker() -> None:
            local = {kind: [] for kind in kinds}
            while True:
                with lock:
                    if not queue:
                        break
                    mac = queue.pop()
                try:
                    Machine(server.port, mac, local).install()
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    errors.append(str(exc)[:300])
            with lock:
                for kind in kinds:
                    latencies[kind].extend(local[kind])

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        rss = peak_rss_mb(server.pid)
    url = f"sqlite:///{database}"
    states = dict(rows(url, "SELECT state, count(*) FROM nodes GROUP BY state"))
    events = dict(rows(url, "SELECT event_type, count(*) FROM node_events GROUP BY event_type"))
    sent = {
        "install_started": len(latencies["install_started"]),
        "install_progress": len(latencies["install_progress"]),
        "install_complete": len(latencies["install_complete"]),
        "first_boot": len(latencies["first_boot"]),
    }
    return {
        "nodes": NODES,
        "concurrency": CONCURRENCY,
        "seconds_to_all_active": round(elapsed, 1),
        "requests": sum(len(values) for values in latencies.values()),
        "requests_per_second": round(sum(len(v) for v in latencies.values()) / elapsed, 1),
        "p99_ms": {
            kind: round(percentile(sorted(values), 0.99) * 1000, 1)
            for kind, values in latencies.items()
        },
        "errors": len(errors),
        "first_errors": errors[:3],
        "states": states,
        "events_match_sent": all(events.get(kind, 0) == count for kind, count in sent.items()),
        "events_by_type": events,
        "server_peak_rss_mb": round(rss, 1),
    }

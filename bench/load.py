"""A small closed-loop HTTP load generator: N threads, keep-alive connections, latencies."""

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field


@dataclass
class LoadResult:
    """Latencies (seconds, with the wall time each request started) and failures."""

    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def latencies(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return sorted(lat for began, lat in self.samples if start <= began <= end)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(fraction * len(values)))]


Request = Callable[[int, int], tuple]  # (method, path, body[, extra headers])


def run_load(
    host: str, port: int, threads: int, make_request: Request, *, stop: threading.Event
) -> LoadResult:
    """Run ``threads`` workers until ``stop`` is set; each sends ``make_request(worker, n)``."""
    result = LoadResult()
    lock = threading.Lock()

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        count = 0
        local: list[tuple[float, float]] = []
        statuses: dict[int, int] = {}
        errors = 0
        while not stop.is_set():
            method, path, body, *extra = make_request(index, count)
            count += 1
            headers = {"Content-Type": "application/json"} if body is not None else {}
            headers.update(extra[0] if extra else {})
            began = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                errors += 1
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=30)
                continue
            local.append((began, time.perf_counter() - began))
            statuses[status] = statuses.get(status, 0) + 1
        connection.close()
        with lock:
            result.samples.extend(local)
            result.errors += errors
            for status, n in statuses.items():
                result.statuses[status] = result.statuses.get(status, 0) + n

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return result


def report_body(mac: str, event: str, **extra: object) -> bytes:
    return json.dumps({"mac_address": mac, "event": event, **extra}).encode()

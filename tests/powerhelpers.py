"""BMCs for the power tests, all on loopback: pyghmi's IPMI server, Redfish servers that
block or never answer, and a wait for a power action's outcome."""

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from polling import WAIT_SECONDS
from polling import wait_for

__all__ = ["WAIT_SECONDS", "wait_for"]  # the power tests import the wait from here too

IPMI_BMC = Path(__file__).resolve().parent / "power" / "ipmi_bmc.py"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def finished_action(client, action_id: int) -> dict:
    """The action once it succeeded or failed."""

    def done():
        data = client.get(f"/api/v1/power/actions/{action_id}").json["data"]
        return data if data["status"] in ("succeeded", "failed") else None

    return wait_for(done, f"power action {action_id}")


def events_of(client, node_id: str) -> list[dict]:
    return client.get(f"/api/v1/nodes/{node_id}/events?limit=500").json["data"]


@contextmanager
def ipmi_bmc(tmp_path: Path, user: str = "admin", password: str = "s3cret") -> Iterator[dict]:
    """pyghmi's BMC server on a loopback UDP port; ``log`` lists what it carried out."""
    port = free_port(socket.SOCK_DGRAM)
    log = tmp_path / f"bmc-{port}.log"
    process = subprocess.Popen(
        [sys.executable, str(IPMI_BMC), str(port), user, password, str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: log.exists() and "ready" in log.read_text(), "the IPMI BMC", 30)
        yield {"address": f"127.0.0.1:{port}", "log": log, "user": user, "password": password}
    finally:
        process.terminate()
        process.wait(10)


class BlockingRedfish:
    """An HTTP server on loopback whose every request waits until ``release()``, then 503s:
    a BMC that hangs until the test lets it go."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with outer._lock:
                    outer.waiting += 1
                outer.gate.wait(WAIT_SECONDS)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PATCH = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/redfish/v1/Systems/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def silent_listener() -> Iterator[str]:
    """A loopback TCP port that accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/redfish/v1/Systems/1"

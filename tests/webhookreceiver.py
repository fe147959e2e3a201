"""A webhook receiver for tests: a loopback HTTP server that records every POST.

It answers from a script of statuses, then with ``default``::

    with WebhookReceiver(statuses=[500, 500]) as receiver:   # fail twice, then accept
        ... point a [[WEBHOOKS]] url at receiver.url ...
        receiver.wait_for(3)
        assert [hit.status for hit in receiver.received] == [500, 500, 200]

With ``hold=True`` every POST waits (up to ``HOLD_LIMIT_SECONDS``) until ``release()``:
a receiver that hangs for exactly as long as the test needs, no clock involved.

With ``authorization`` set, a POST without exactly that ``Authorization`` header is
answered 401 (and recorded), like a receiver behind Basic auth.

Standard library only (``http.server`` in a thread), so it behaves like any small receiver.
"""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self

#: How long a held POST waits at most: only so a forgotten ``release()`` cannot hang a run.
HOLD_LIMIT_SECONDS = 60.0


@dataclass(frozen=True)
class Received:
    """One POST as the receiver saw it, and the status it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class WebhookReceiver:
    """Record POSTs on ``127.0.0.1:<port>``; answer ``statuses`` in turn, then ``default``."""

    def __init__(
        self,
        statuses: Iterable[int] = (),
        *,
        default: int = 200,
        hold: bool = False,
        authorization: str | None = None,
    ) -> None:
        self.statuses = list(statuses)
        self.default = default
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.arrived = threading.Event()
        self.authorization = authorization
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.arrived.set()
                receiver.released.wait(HOLD_LIMIT_SECONDS)
                status = receiver._record(self.path, dict(self.headers.items()), body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 400 else b"no")

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if self.authorization and headers.get("Authorization") != self.authorization:
                self.received.append(Received(path, headers, body, 401))
                return 401
            status = self.statuses.pop(0) if self.statuses else self.default
            self.received.append(Received(path, headers, body, status))
            return status

    def release(self) -> None:
        """Let held POSTs (and all later ones) be answered."""
        self.released.set()

    def accepted(self) -> list[Received]:
        """The POSTs answered with a 2xx status."""
        with self._lock:
            return [hit for hit in self.received if 200 <= hit.status < 300]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Wait until ``count`` POSTs arrived (AssertionError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} webhook POSTs, got {len(self.received)}")

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

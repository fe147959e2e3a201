"""Small HTTP servers of the tests' own on loopback: the lifecycle they share, and forwarding
a request to another loopback server."""

import http.client
import http.server
import threading
from typing import Self

HOP_BY_HOP = frozenset({"connection", "proxy-connection", "keep-alive", "transfer-encoding"})


class LoopbackHTTPServer:
    """A threading HTTP server on a free loopback port, serving while the ``with`` block
    runs; subclasses give it their handler class."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def forward(
    handler: http.server.BaseHTTPRequestHandler,
    port: int,
    target: str,
    *,
    timeout: float = 30,
    close: bool = False,
) -> None:
    """Send ``handler``'s request to ``127.0.0.1:port`` as ``target`` (path and query) and
    its answer back whole, with a Content-Length; ``close`` ends the client's connection
    after it."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else None
    headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
    upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        upstream.request(handler.command, target, body=body, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
    finally:
        upstream.close()
    handler.send_response(response.status)
    for key, value in response.getheaders():
        if key.lower() not in HOP_BY_HOP | {"content-length"}:
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    if close:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(payload)

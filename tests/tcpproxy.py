"""A TCP proxy for fault tests: forwards a loopback port to a server and fails on demand.

Put it between the server under test and its database, then pull the cable::

    with TcpProxy(target_port=5432) as proxy:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/scratch"
        ...
        proxy.cut()       # every open connection dies; new ones are reset at once
        proxy.cut(blackhole=True)  # ...or accepted and never answered (a dead route)
        proxy.restore()   # new connections are forwarded again

Plain threads and blocking sockets, standard library only: one thread accepts, two per
connection copy bytes. A cut closes both sides of every forwarded connection, so the client
sees what a dropped network link or a crashed database host looks like to it.
"""

import select
import socket
import struct
import threading
from types import TracebackType
from typing import Self

CHUNK_BYTES = 65536
#: How often the accept loop looks at the stop flag.
POLL_SECONDS = 0.05


def _close(sock: socket.socket, *, reset: bool = False) -> None:
    """Close ``sock``.

    By default it is shut down first, which wakes a pump thread blocked reading it. ``reset``
    sends an RST instead of a FIN; only for a socket no thread is reading.
    """
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    """Forward ``host:port`` (a free loopback port by default) to ``target_host:target_port``.

    ``cut()`` closes every forwarded connection and handles new ones the chosen way until
    ``restore()``; the listening port stays the same throughout, as a real address would.
    """

    def __init__(
        self,
        target_host: str = "127.0.0.1",
        target_port: int = 5432,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.refused = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []
        self._mode = "forward"

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Listen and start forwarding."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name="tcpproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
        self._drop_all()

    # -- faults ---------------------------------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._mode != "forward"

    @property
    def open_connections(self) -> int:
        """Connections being forwarded right now."""
        with self._lock:
            return len(self._pairs)

    def cut(self, *, blackhole: bool = False) -> int:
        """Close every forwarded connection; return how many were open.

        Until ``restore()``, a new connection is reset as soon as it is accepted, or with
        ``blackhole=True`` accepted and then never answered, like a host that went away
        (the client only gives up on its own timeout).
        """
        with self._lock:
            self._mode = "blackhole" if blackhole else "reset"
        return self._drop_all()

    def restore(self) -> None:
        """Forward new connections again (connections held by a blackhole are closed)."""
        with self._lock:
            self._mode = "forward"
            held, self._held = self._held, []
        for sock in held:
            _close(sock, reset=True)

    # -- internals ------------------------------------------------------------------------

    def _drop_all(self) -> int:
        with self._lock:
            pairs, self._pairs = self._pairs, set()
            held, self._held = self._held, []
        for client, upstream in pairs:
            _close(client)
            _close(upstream)
        for sock in held:
            _close(sock, reset=True)
        return len(pairs)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], POLL_SECONDS)
            if not readable:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            mode = self._mode
            if mode == "blackhole":
                self._held.append(client)
        if mode == "blackhole":
            self.refused += 1
            return
        if mode == "reset":
            self.refused += 1
            _close(client, reset=True)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            _close(client, reset=True)
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        with self._lock:
            if self._mode != "forward":  # cut while we were connecting
                _close(client, reset=True)
                _close(upstream)
                return
            self._pairs.add(pair)
            self.accepted += 1
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(source, sink, pair), name="tcpproxy-pump", daemon=True
            ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        """Copy bytes one way until either side closes; then close the pair."""
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            mine = pair in self._pairs
            self._pairs.discard(pair)
        if mine:
            _close(pair[0])
            _close(pair[1])

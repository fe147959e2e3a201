"""The sender process: sending loops with ``os.sendfile``, apart from the server's GIL.

``provisioner serve`` starts this file as a process of its own (``AssetSender``, in
``sender``) and talks to it over one ``AF_UNIX`` ``SOCK_SEQPACKET`` pair. Each message from
the server is one answer to send: JSON (an id, the head, the pieces of the body: file
slices and the bytes between them, whether the connection is kept after it) with two
descriptors passed along (``SCM_RIGHTS``): the client's connection and the open file. Each
message back is what one answer sent (id, file bytes, seconds, whether all went, and why
not). The server's closing its end, or its death, stops the process: answers under way are
cut off and reported, and it exits.

The process uses the standard library only and is started without ``site`` or the
``provisioner`` package (``python -I -S sendloop.py``): a few MB of memory and a fraction
of a second to start, nothing of the app.
"""

import contextlib
import itertools
import json
import os
import queue
import resource
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

#: A client that takes no data for this long is dropped.
SEND_TIMEOUT_SECONDS = 60
#: How often transfers that made no progress for the send timeout are dropped.
SWEEP_SECONDS = 5
#: Largest single ``os.sendfile`` call (a socket takes at most its send buffer, 4 MiB).
SENDFILE_SLICE = 4 << 20
TCP_CORK = getattr(socket, "TCP_CORK", 3)
#: What the process says once it is ready for answers.
READY = b"ready"
#: Largest message either way (32 ranges' part headers fit many times over).
MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Sent:
    """What one answer sent: file bytes of the body, seconds taken, and whether all went."""

    file_bytes: int
    seconds: float
    complete: bool


#: A piece of an answer: bytes as they are, or ``(offset, length)`` of the file.
Piece = bytes | tuple[int, int]


class Transfer:
    """One answer being sent: its pieces, where it is in them, and what it has sent."""

    def __init__(
        self,
        ident: int,
        sock: socket.socket,
        fd: int,
        pieces: list[Piece],
        file_bytes: int,
        keep: bool,
    ) -> None:
        self.ident = ident
        self.sock = sock
        self.fd = fd
        self.pieces = pieces
        self.expected = file_bytes
        self.keep = keep
        self.offset = 0  # into pieces[0]
        self.file_bytes = 0
        self.note = ""
        self.started = self.last_progress = time.monotonic()

    def step(self) -> bool:
        """Send what the socket takes now; ``True`` once everything is sent."""
        while self.pieces:
            piece = self.pieces[0]
            if isinstance(piece, bytes):
                count = self.sock.send(piece[self.offset :])
                left = len(piece) - self.offset - count
            else:
                start, length = piece
                count = os.sendfile(
                    self.sock.fileno(),
                    self.fd,
                    start + self.offset,
                    min(length - self.offset, SENDFILE_SLICE),
                )
                if count == 0:  # the file shrank under us
                    raise OSError("file shorter than its answer")
                self.file_bytes += count
                left = length - self.offset - count
            self.last_progress = time.monotonic()
            if left:
                self.offset += count
                return False  # the socket is full: wait until it is writable again
            self.pieces.pop(0)
            self.offset = 0
        return True

    def result(self) -> Sent:
        """What was sent, and whether that was all of it."""
        complete = not self.pieces and self.file_bytes == self.expected
        return Sent(self.file_bytes, time.monotonic() - self.started, complete)


def close_gently(sock: socket.socket) -> None:
    """Close after the peer has all the data (FIN, not a reset)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


def encode_answer(
    ident: int, head: bytes, pieces: list[Piece], file_bytes: int, keep: bool
) -> bytes:
    """The message for one answer (bytes pieces as latin-1 text, which maps every byte)."""
    body = [piece.decode("latin-1") if isinstance(piece, bytes) else piece for piece in pieces]
    message = {"id": ident, "head": head.decode("latin-1"), "pieces": body}
    message |= {"file_bytes": file_bytes, "keep": keep}
    return json.dumps(message, separators=(",", ":")).encode()


def decode_answer(data: bytes) -> tuple[int, list[Piece], int, bool]:
    """Id, pieces (the head first), file bytes and keep of an ``encode_answer`` message."""
    message = json.loads(data)
    pieces: list[Piece] = [message["head"].encode("latin-1")]
    for piece in message["pieces"]:
        pieces.append(piece.encode("latin-1") if isinstance(piece, str) else tuple(piece))
    return message["id"], pieces, message["file_bytes"], message["keep"]


def encode_result(ident: int, sent: Sent, note: str) -> bytes:
    """The message saying what answer ``ident`` sent."""
    message = {"id": ident, "file_bytes": sent.file_bytes, "seconds": sent.seconds}
    message |= {"complete": sent.complete, "note": note}
    return json.dumps(message, separators=(",", ":")).encode()


def decode_result(data: bytes) -> tuple[int, Sent, str]:
    """Id, ``Sent`` and note of an ``encode_result`` message."""
    message = json.loads(data)
    sent = Sent(message["file_bytes"], message["seconds"], message["complete"])
    return message["id"], sent, message["note"]


class SendingLoop:
    """One thread sending its answers with non-blocking ``os.sendfile`` (as nginx does):
    each writable socket gets what it can take, the kernel copies the file. ``finished``
    is called with each transfer once it is over (sent, cut off or dropped), after its
    connection was closed, or uncorked and left open for the server to keep."""

    def __init__(
        self,
        finished,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
        sweep: float = SWEEP_SECONDS,
    ) -> None:
        self._selector = selectors.DefaultSelector()
        self._incoming: queue.SimpleQueue[Transfer] = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._stopping = False
        self._finished = finished
        self._send_timeout = send_timeout
        self._sweep = sweep
        self._thread = threading.Thread(target=self._loop, name="asset-sender", daemon=True)
        self._thread.start()

    def add(self, transfer: Transfer) -> None:
        """Send ``transfer`` from this loop's thread."""
        self._incoming.put(transfer)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"x")
        except BlockingIOError:
            pass  # already awake

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._sweep
        while not self._stopping:
            for key, _ in self._selector.select(self._sweep):
                if key.data is None:
                    self._take_incoming()
                else:
                    self._advance(key.data)
            if time.monotonic() >= next_sweep:
                self._drop_stalled()
                next_sweep = time.monotonic() + self._sweep
        self._take_incoming(start=False)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                key.data.note = "server stopping"
                self._finish(key.data)

    def _take_incoming(self, start: bool = True) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except BlockingIOError:
            pass
        while not self._incoming.empty():
            transfer = self._incoming.get()
            transfer.sock.setblocking(False)
            # Full segments only until the end (nginx's tcp_nopush): close_gently's
            # shutdown, or the uncorking of a kept connection, sends what is left.
            with contextlib.suppress(OSError):
                transfer.sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
            self._selector.register(transfer.sock, selectors.EVENT_WRITE, transfer)
            if start:
                self._advance(transfer)

    def _advance(self, transfer: Transfer) -> None:
        try:
            finished = transfer.step()
        except BlockingIOError:
            return
        except OSError as exc:
            transfer.note = f"client gone: {exc}"
            finished = True
        if finished:
            self._finish(transfer)

    def _drop_stalled(self) -> None:
        limit = time.monotonic() - self._send_timeout
        for key in list(self._selector.get_map().values()):
            if key.data is not None and key.data.last_progress < limit:
                key.data.note = f"client took nothing for {self._send_timeout:g} s"
                self._finish(key.data)

    def _finish(self, transfer: Transfer) -> None:
        self._selector.unregister(transfer.sock)
        sent = transfer.result()
        if sent.complete and transfer.keep and not self._stopping:
            # The server keeps the connection (its own descriptor of it): only uncork, so
            # the answer's last segment leaves now, and let go of this process's copy.
            with contextlib.suppress(OSError):  # not a TCP socket (tests), or gone
                transfer.sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
            transfer.sock.close()
        else:
            close_gently(transfer.sock)
        os.close(transfer.fd)
        self._finished(transfer, sent)

    def stop(self) -> None:
        """Stop sending (answers under way are cut off and reported as such)."""
        self._stopping = True
        self._wake()
        self._thread.join()


class Reporter:
    """Sends results to the server over the control socket, one message each."""

    def __init__(self, control: socket.socket) -> None:
        self._control = control
        self._lock = threading.Lock()

    def __call__(self, transfer: Transfer, sent: Sent) -> None:
        """Report ``transfer`` (``SendingLoop``'s ``finished``)."""
        self.send(transfer.ident, sent, transfer.note)

    def send(self, ident: int, sent: Sent, note: str) -> None:
        """Report what answer ``ident`` sent."""
        message = encode_result(ident, sent, note)
        with self._lock:
            try:
                self._control.sendmsg([message], [], socket.MSG_NOSIGNAL)
            except OSError:
                pass  # the server is gone: nobody to tell


def run(
    control: socket.socket,
    loops: int,
    send_timeout: float = SEND_TIMEOUT_SECONDS,
    sweep: float = SWEEP_SECONDS,
    parent: int | None = None,
) -> None:
    """Take answers from ``control`` and send them from ``loops`` sending loops until the
    server closes its end (or ``parent`` is no longer this process's parent)."""
    report = Reporter(control)
    sending = [SendingLoop(report, send_timeout, sweep) for _ in range(max(loops, 1))]
    turn = itertools.count()
    control.sendmsg([READY], [], socket.MSG_NOSIGNAL)
    if parent is not None:
        control.settimeout(sweep)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(control, MESSAGE_BYTES, 2)
        except TimeoutError:
            if os.getppid() != parent:  # the server died and its end is held elsewhere
                break
            continue
        except OSError:
            break
        if not data:  # the server closed its end, or exited
            for fd in fds:
                os.close(fd)
            break
        ident, pieces, file_bytes, keep = decode_answer(data)
        if len(fds) != 2:  # out of descriptors (the kernel dropped them): cut off
            for fd in fds:
                os.close(fd)
            note = "not sent: the sender process is out of descriptors"
            report.send(ident, Sent(0, 0.0, complete=False), note)
            continue
        sock = socket.socket(fileno=fds[0])
        transfer = Transfer(ident, sock, fds[1], pieces, file_bytes, keep)
        sending[next(turn) % len(sending)].add(transfer)
    for loop in sending:
        loop.stop()
    control.close()


def main(argv: list[str]) -> None:
    """``sendloop.py FD LOOPS SEND_TIMEOUT SWEEP CPUS``: run on the control socket ``FD``,
    on the CPUs listed (comma-separated, may be empty)."""
    fd, loops, send_timeout, sweep, cpus = argv
    # The server alone decides when this process stops (it closes the control socket):
    # a Ctrl-C, or a SIGTERM sent to the whole service, reaches the server too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    _raise_open_file_limit()
    control = socket.socket(fileno=int(fd))
    run(control, int(loops), float(send_timeout), float(sweep), parent=os.getppid())


def _raise_open_file_limit() -> None:
    """Two descriptors per answer under way (connection and file), where the server needs
    one per connection: take the hard limit, which an unprivileged process may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    main(sys.argv[1:])

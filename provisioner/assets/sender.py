"""Sending asset bodies with ``os.sendfile`` from a thread of their own.

waitress sends a WSGI body from its one I/O thread, a chunk per loop turn, in Python: a
rack pulling initrds then competes for the GIL with every boot and report. Under
``provisioner serve`` the ``/assets`` view answers the request (path, conditions, ranges)
as any view does, then takes the connection away from waitress (``detach_socket``) and
hands it to the ``AssetSender``, whose one thread writes the head and lets the kernel copy
the file to each socket as it becomes writable (non-blocking ``os.sendfile``, as nginx
does: one system call per few MB, the GIL released during each). Once the whole answer is
sent, a connection the client wants kept alive (HTTP/1.1 without ``Connection: close``,
as iPXE and curl send) goes back to waitress (``return_to_waitress``: a new channel on the
same socket), which reads the next request from it as from any connection; iPXE fetches
the kernel and then the initrd that way. Otherwise the head says ``Connection: close``
and the sender closes the connection, as it does after an answer that was cut off.

A thread per download with blocking ``sendfile`` was tried first: it needs no GIL at all
during a transfer, but every socket's wait for buffer space is then a thread wake-up of
its own; the loops are nginx's design. ``bench assets`` compares both with nginx
(docs/performance.md).
"""

import contextlib
import functools
import itertools
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import WSGITask

from provisioner.assets.files import OpenAsset
from provisioner.assets.http import Plan
from provisioner.assets.http import Slice

log = logging.getLogger(__name__)

#: The CPUs this process may use, read before ``serve`` pins it to one (``pin_to_one_cpu``):
#: pinning keeps GIL hand-overs on one core, and sender threads hardly take the GIL, while
#: the kernel's copying for them is the most work there is to spread.
ALLOWED_CPUS = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

#: WSGI environ key of the callable that detaches the request's connection from waitress.
HANDOFF_KEY = "provisioner.assets.detach"
#: A client that takes no data for this long is dropped.
SEND_TIMEOUT_SECONDS = 60
#: Largest single ``os.sendfile`` call (a socket takes at most its send buffer, 4 MiB).
SENDFILE_SLICE = 4 << 20
TCP_CORK = getattr(socket, "TCP_CORK", 3)
#: Sending loops at most (one per CPU up to this).
MAX_LOOPS = 4
#: How often transfers that made no progress for ``SEND_TIMEOUT_SECONDS`` are dropped.
SWEEP_SECONDS = 5
#: How long a request thread waits for waitress's I/O thread to let go of a connection.
DETACH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Sent:
    """What one answer sent: file bytes of the body, seconds taken, and whether all went."""

    file_bytes: int
    seconds: float
    complete: bool


#: Called with what was sent once an answer is over (from the recording thread).
Done = Callable[[Sent], None]
#: Takes back a connection whose answer went out whole, to read the client's next request.
GiveBack = Callable[[socket.socket], None]


@dataclass(frozen=True)
class Detached:
    """A connection taken from waitress, and how to give it back after the answer."""

    sock: socket.socket
    give_back: GiveBack


def head_bytes(plan: Plan, server: str, keep_alive: bool = False) -> bytes:
    """The status line and headers of ``plan``; the connection is closed after it unless
    ``keep_alive`` (``Connection: keep-alive`` then, which HTTP/1.0 clients need)."""
    lines = [f"HTTP/1.1 {plan.status} {HTTPStatus(plan.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in plan.headers]
    lines += [f"Date: {formatdate(usegmt=True)}", f"Server: {server}"]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Transfer:
    """One answer being sent: its pieces, where it is in them, and what it has sent."""

    def __init__(
        self,
        sock: socket.socket,
        asset: OpenAsset,
        plan: Plan,
        head: bytes,
        done: Done,
        give_back: GiveBack | None = None,
    ) -> None:
        self.sock = sock
        self.asset = asset
        self.plan = plan
        self.done = done
        self.give_back = give_back
        self.pieces: list[bytes | Slice] = [head, *plan.body]
        self.offset = 0  # into pieces[0]
        self.file_bytes = 0
        self.started = self.last_progress = time.monotonic()

    def step(self) -> bool:
        """Send what the socket takes now; ``True`` once everything is sent."""
        while self.pieces:
            piece = self.pieces[0]
            if isinstance(piece, bytes):
                count = self.sock.send(piece[self.offset :])
                left = len(piece) - self.offset - count
            else:
                count = os.sendfile(
                    self.sock.fileno(),
                    self.asset.fd,
                    piece.offset + self.offset,
                    min(piece.length - self.offset, SENDFILE_SLICE),
                )
                if count == 0:  # the file shrank under us
                    raise OSError("file shorter than its answer")
                self.file_bytes += count
                left = piece.length - self.offset - count
            self.last_progress = time.monotonic()
            if left:
                self.offset += count
                return False  # the socket is full: wait until it is writable again
            self.pieces.pop(0)
            self.offset = 0
        return True

    def result(self) -> Sent:
        """What was sent, and whether that was all of it."""
        complete = not self.pieces and self.file_bytes == self.plan.file_bytes
        return Sent(self.file_bytes, time.monotonic() - self.started, complete)


def close_gently(sock: socket.socket) -> None:
    """Close after the peer has all the data (FIN, not a reset)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


class AssetSender:
    """Sending loops, one per CPU the process may use (as nginx's ``worker_processes
    auto``), each answer given to the next loop in turn; finished downloads are recorded by
    another thread, off the loops."""

    def __init__(self, server: str, loops: int | None = None) -> None:
        self.server = server
        count = loops or min(max(len(ALLOWED_CPUS or ()), 1), MAX_LOOPS)
        self._records = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asset-records")
        self._loops = [SendingLoop(self._records) for _ in range(count)]
        self._turn = itertools.count()

    def submit(
        self,
        sock: socket.socket,
        asset: OpenAsset,
        plan: Plan,
        done: Done,
        give_back: GiveBack | None = None,
    ) -> None:
        """Send ``plan`` on ``sock`` from a sending loop, then close the file, then ``done``.

        The connection then goes to ``give_back`` when there is one and the answer went out
        whole (the head says ``Connection: keep-alive``); otherwise it is closed.
        """
        head = head_bytes(plan, self.server, keep_alive=give_back is not None)
        transfer = Transfer(sock, asset, plan, head, done, give_back)
        self._loops[next(self._turn) % len(self._loops)].add(transfer)

    def shutdown(self) -> None:
        """Stop sending (answers under way are cut off and recorded as such)."""
        for loop in self._loops:
            loop.stop()
        self._records.shutdown(wait=True)


class SendingLoop:
    """One thread sending its answers with non-blocking ``os.sendfile`` (as nginx does):
    each writable socket gets what it can take, the kernel copies the file. The thread
    takes the GIL once per call, a few hundred times a second at full speed."""

    def __init__(self, records: ThreadPoolExecutor) -> None:
        self._selector = selectors.DefaultSelector()
        self._incoming: queue.SimpleQueue[Transfer] = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._stopping = False
        self._records = records
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
        _unpin()
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stopping:
            for key, _ in self._selector.select(SWEEP_SECONDS):
                if key.data is None:
                    self._take_incoming()
                else:
                    self._advance(key.data)
            if time.monotonic() >= next_sweep:
                self._drop_stalled()
                next_sweep = time.monotonic() + SWEEP_SECONDS
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                self._finish(key.data)

    def _take_incoming(self) -> None:
        try:
            while self._wake_read.recv(4096):
                pass
        except BlockingIOError:
            pass
        while not self._incoming.empty():
            transfer = self._incoming.get()
            transfer.sock.setblocking(False)
            # Full segments only until the end (nginx's tcp_nopush): close_gently's
            # shutdown sends what is left.
            with contextlib.suppress(OSError):
                transfer.sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 1)
            self._selector.register(transfer.sock, selectors.EVENT_WRITE, transfer)
            self._advance(transfer)

    def _advance(self, transfer: Transfer) -> None:
        try:
            finished = transfer.step()
        except BlockingIOError:
            return
        except OSError as exc:
            log.info("asset %s: client gone: %s", transfer.asset.path, exc)
            finished = True
        if finished:
            self._finish(transfer)

    def _drop_stalled(self) -> None:
        limit = time.monotonic() - SEND_TIMEOUT_SECONDS
        for key in list(self._selector.get_map().values()):
            if key.data is not None and key.data.last_progress < limit:
                log.info(
                    "asset %s: client took nothing for %d s",
                    key.data.asset.path,
                    SEND_TIMEOUT_SECONDS,
                )
                self._finish(key.data)

    def _finish(self, transfer: Transfer) -> None:
        self._selector.unregister(transfer.sock)
        sent = transfer.result()
        if sent.complete and transfer.give_back is not None and not self._stopping:
            hand_back(transfer.sock, transfer.give_back)
        else:
            close_gently(transfer.sock)
        transfer.asset.close()
        self._records.submit(_record, transfer.asset.path, transfer.done, sent)

    def stop(self) -> None:
        """Stop sending (answers under way are cut off and recorded as such)."""
        self._stopping = True
        self._wake()
        self._thread.join(5)


def hand_back(sock: socket.socket, give_back: GiveBack) -> None:
    """Give a connection whose answer went out whole to ``give_back``: uncorked first, so
    the answer's last segment leaves now, not when the next answer fills one."""
    with contextlib.suppress(OSError):  # not a TCP socket (tests), or already gone
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CORK, 0)
    try:
        give_back(sock)
    except OSError as exc:
        log.info("asset connection not kept alive: %s", exc)
        close_gently(sock)


def _record(path: str, done: Done, sent: Sent) -> None:
    try:
        done(sent)
    except Exception:  # noqa: BLE001 - a failed event must not stop the next ones
        log.exception("asset %s: recording the download failed", path)


def _unpin() -> None:
    """Let this sender thread run on every CPU the process was allowed at start."""
    if ALLOWED_CPUS:
        os.sched_setaffinity(0, ALLOWED_CPUS)


def detach_socket(channel: HTTPChannel, timeout: float = DETACH_TIMEOUT_SECONDS) -> Any:
    """Take the request's connection from waitress: a ``Detached`` socket of our own (with
    the means to give it back), or ``None`` when it cannot be had (the client pipelined
    more requests, or went away).

    Earlier answers on the connection are flushed first. waitress's I/O thread owns the
    channel, so the detaching runs there (a trigger thunk): it duplicates the descriptor,
    then closes the channel as if the client had gone (the connection stays open through
    the duplicate). The task's own answer then finds the channel closed and is dropped.
    """
    with channel.outbuf_lock:
        deadline = time.monotonic() + timeout
        while channel.connected and channel.total_outbufs_len:
            if time.monotonic() > deadline:
                return None
            channel.server.pull_trigger()
            channel.outbuf_lock.wait(0.5)
    result: list[socket.socket | None] = [None]
    ready = threading.Event()

    def detach() -> None:
        try:
            if channel.connected and len(channel.requests) == 1 and channel.request is None:
                result[0] = channel.socket.dup()
                channel.handle_close()
        finally:
            ready.set()

    channel.server.trigger.pull_trigger(detach)
    if not ready.wait(timeout) or result[0] is None:
        return None
    return Detached(result[0], functools.partial(return_to_waitress, channel.server, channel.addr))


def return_to_waitress(server: Any, addr: Any, sock: socket.socket) -> None:
    """Serve ``sock`` by waitress again: a new channel of ``server`` on it, made in
    waitress's I/O thread (which owns the channels), as when it accepts a connection.

    The client's next request may already wait in the socket; the new channel reads it.
    A server that has stopped takes nothing: the connection is closed.
    """

    def attach() -> None:
        try:
            server.channel_class(server, sock, addr, server.adj, map=server._map)
        except OSError as exc:
            log.info("asset connection not kept alive: %s", exc)
            sock.close()

    server.trigger.pull_trigger(attach)


class HandoffTask(WSGITask):
    """A waitress task whose environ offers ``HANDOFF_KEY``: the connection, detached."""

    def get_environment(self) -> dict[str, Any]:
        """The WSGI environ, plus the detaching callable."""
        environ = super().get_environment()
        environ[HANDOFF_KEY] = functools.partial(detach_socket, self.channel)
        return environ


class DroppedAnswerFilter(logging.Filter):
    """Silence waitress's "Client disconnected" for the answers handed to a sender."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but those."""
        return not record.getMessage().startswith("Client disconnected while serving /assets/")

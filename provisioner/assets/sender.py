"""Sending asset bodies with ``os.sendfile`` from threads of their own, off the GIL.

waitress sends a WSGI body from its one I/O thread, a chunk per loop turn, in Python: a
rack pulling initrds then competes for the GIL with every boot and report. Under
``provisioner serve`` the ``/assets`` view answers the request (path, conditions, ranges)
as any view does, then takes the connection away from waitress (``detach_socket``) and
hands it to an ``AssetSender`` thread, which writes the head and lets the kernel copy the
file to the socket (``os.sendfile`` on a blocking socket: one system call per slice,
the GIL released throughout). The answer carries ``Connection: close``; the client's
next request opens a new connection, which waitress serves as usual.
"""

import functools
import logging
import os
import socket
import struct
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
#: A client that takes no data for this long is dropped (SO_SNDTIMEO on the socket).
SEND_TIMEOUT_SECONDS = 60
#: Largest single ``os.sendfile`` call: the thread takes the GIL back once per slice.
SENDFILE_SLICE = 1 << 30
#: How long a request thread waits for waitress's I/O thread to let go of a connection.
DETACH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Sent:
    """What one answer sent: file bytes of the body, seconds taken, and whether all went."""

    file_bytes: int
    seconds: float
    complete: bool


def head_bytes(plan: Plan, server: str) -> bytes:
    """The status line and headers of ``plan``, closing the connection after it."""
    lines = [f"HTTP/1.1 {plan.status} {HTTPStatus(plan.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in plan.headers]
    lines += [f"Date: {formatdate(usegmt=True)}", f"Server: {server}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_plan(sock: socket.socket, asset: OpenAsset, plan: Plan, server: str) -> Sent:
    """Write ``plan`` (head and body) to a blocking ``sock``; count the file bytes sent."""
    started = time.monotonic()
    sent = 0
    try:
        sock.sendall(head_bytes(plan, server))
        for piece in plan.body:
            if isinstance(piece, bytes):
                sock.sendall(piece)
            else:
                sent += _sendfile(sock, asset.fd, piece)
    except OSError as exc:
        log.info("asset %s: client gone after %d bytes: %s", asset.path, sent, exc)
        return Sent(sent, time.monotonic() - started, complete=False)
    return Sent(sent, time.monotonic() - started, complete=sent == plan.file_bytes)


def _sendfile(sock: socket.socket, fd: int, piece: Slice) -> int:
    offset, remaining = piece.offset, piece.length
    while remaining:
        count = os.sendfile(sock.fileno(), fd, offset, min(remaining, SENDFILE_SLICE))
        if count == 0:  # the file shrank under us
            break
        offset += count
        remaining -= count
    return piece.length - remaining


def prepare_socket(sock: socket.socket) -> None:
    """Make ``sock`` blocking, with a send timeout so a stalled client frees its thread."""
    sock.setblocking(True)
    timeval = struct.pack("ll", SEND_TIMEOUT_SECONDS, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def close_gently(sock: socket.socket) -> None:
    """Close after the peer has all the data (FIN, not a reset)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


class AssetSender:
    """A pool of threads that each send one asset answer at a time."""

    def __init__(self, threads: int, server: str) -> None:
        self.server = server
        self._pool = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="assets", initializer=_unpin
        )

    def submit(
        self,
        sock: socket.socket,
        asset: OpenAsset,
        plan: Plan,
        done: Callable[[Sent], None],
    ) -> None:
        """Send ``plan`` on ``sock`` from a pool thread; then close both, then ``done``."""
        self._pool.submit(self._run, sock, asset, plan, done)

    def _run(
        self, sock: socket.socket, asset: OpenAsset, plan: Plan, done: Callable[[Sent], None]
    ) -> None:
        try:
            prepare_socket(sock)
            result = send_plan(sock, asset, plan, self.server)
        finally:
            close_gently(sock)
            asset.close()
        try:
            done(result)
        except Exception:  # noqa: BLE001 - a failed event must not kill the thread
            log.exception("asset %s: recording the download failed", asset.path)

    def shutdown(self) -> None:
        """Stop taking answers; those under way finish in their threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _unpin() -> None:
    """Let this sender thread run on every CPU the process was allowed at start."""
    if ALLOWED_CPUS:
        os.sched_setaffinity(0, ALLOWED_CPUS)


def detach_socket(channel: HTTPChannel, timeout: float = DETACH_TIMEOUT_SECONDS) -> Any:
    """Take the request's connection from waitress: a socket of our own, or ``None`` when
    it cannot be had (the client pipelined more requests, or went away).

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
    if not ready.wait(timeout):
        return None
    return result[0]


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

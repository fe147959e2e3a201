"""Sending asset bodies with ``os.sendfile`` from a process of its own.

waitress sends a WSGI body from its one I/O thread, a chunk per loop turn, in Python: a
rack pulling initrds then competes for the GIL with every boot and report. Under
``provisioner serve`` the ``/assets`` view answers the request (path, conditions, ranges)
as any view does, then takes the connection away from waitress (``detach_socket``) and
hands it to the ``AssetSender``, which passes the connection and the open file
(``SCM_RIGHTS``), with the head and the pieces of the body, to a sender process
(``sendloop``). Its sending loops write the head and let the kernel copy the file to each
socket as it becomes writable (non-blocking ``os.sendfile``, as nginx does: one system
call per few MB).

Why a process: it has a GIL of its own. Sending threads inside the server took the GIL
back after every ``sendfile`` call, several hundred times a second, from request threads
that were busy with reports (CPU-bound Python and a SQLite writer): each take forced a
hand-over, and reports beside the downloads ran at 0.57-0.67 x their rate beside nginx's
downloads. The process stays in the server's session (so in its scheduling autogroup: the
kernel's work for the transfers still counts against the server's share of the machine,
as it did with threads); only the GIL is no longer shared, and reports beside it ran at
0.89-1.21 x. Started in a session of its own (nginx's placement) it did worse in the one
run tried (reports 0.83 x, boots 0.77 x), so it was not kept (docs/performance.md,
"bench assets").

When an answer is over the process reports what it sent, and the server records the
download (``done``, on a thread of its own). A connection the client wants kept
alive (HTTP/1.1 without ``Connection: close``, as iPXE and curl send) stays open through
the server's own descriptor of it: after a whole answer the process uncorks it and closes
only its copy, and the server gives it back to waitress (``return_to_waitress``: a new
channel on the same socket), which reads the next request from it as from any connection;
iPXE fetches the kernel and then the initrd that way. Otherwise the head says
``Connection: close`` and the process closes the connection, as it does after an answer
that was cut off.

The process is started with the server (``start_asset_sender``) and stops when the server
closes its end of the control socket (answers under way are cut off and recorded as such)
or dies. If it dies first, the answers it had are recorded as cut off and the next
download starts a new one.
"""

import contextlib
import functools
import itertools
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import WSGITask

from provisioner.assets import sendloop
from provisioner.assets.files import OpenAsset
from provisioner.assets.http import Plan
from provisioner.assets.sendloop import SEND_TIMEOUT_SECONDS
from provisioner.assets.sendloop import SWEEP_SECONDS
from provisioner.assets.sendloop import Sent
from provisioner.assets.sendloop import close_gently

__all__ = ["SEND_TIMEOUT_SECONDS", "SWEEP_SECONDS", "AssetSender", "Sent", "close_gently"]

log = logging.getLogger(__name__)

#: The CPUs this process may use, read before ``serve`` pins it to one (``pin_to_one_cpu``):
#: the sender process runs on all of them.
ALLOWED_CPUS = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

#: WSGI environ key of the callable that detaches the request's connection from waitress.
HANDOFF_KEY = "provisioner.assets.detach"
#: Sending loops in the sender process at most (one per CPU up to this).
MAX_LOOPS = 4
#: How long a request thread waits for waitress's I/O thread to let go of a connection.
DETACH_TIMEOUT_SECONDS = 10
#: How long handing an answer to the sender process may block (it reads them at once).
HANDOFF_TIMEOUT_SECONDS = 10
#: How long a new sender process may take to say it is ready.
STARTUP_TIMEOUT_SECONDS = 30
#: How long ``shutdown`` waits for the sender process to report and exit.
STOP_TIMEOUT_SECONDS = 5


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


@dataclass
class _Pending:
    """An answer the sender process has: what to record, and the kept connection."""

    path: str
    done: Done
    sock: socket.socket | None  # the server's own descriptor of a kept connection
    give_back: GiveBack | None
    started: float = field(default_factory=time.monotonic)


class AssetSender:
    """The sender process (``sendloop``), started at once, and again after it died.

    ``loops`` sending loops in it (default: one per CPU this process may use, as nginx's
    ``worker_processes auto``, up to ``MAX_LOOPS``); ``send_timeout`` and ``sweep`` as
    ``sendloop``'s (tests shorten them).
    """

    def __init__(
        self,
        server: str,
        loops: int | None = None,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
        sweep: float = SWEEP_SECONDS,
    ) -> None:
        self.server = server
        self.loops = loops or min(max(len(ALLOWED_CPUS or ()), 1), MAX_LOOPS)
        self.send_timeout = send_timeout
        self.sweep = sweep
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = False
        self._child: _Child | None = None
        # Events are written here, so that no kept connection waits for the one before.
        self.records = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asset-records")
        with self._lock:
            self._running()

    @property
    def pid(self) -> int | None:
        """The sender process's id (``None`` once stopped)."""
        child = self._child
        return None if child is None else child.process.pid

    def submit(
        self,
        sock: socket.socket,
        asset: OpenAsset,
        plan: Plan,
        done: Done,
        give_back: GiveBack | None = None,
    ) -> None:
        """Have the sender process send ``plan`` on ``sock``; ``done`` once it is over.

        The connection then goes to ``give_back`` when there is one and the answer went out
        whole (the head says ``Connection: keep-alive``); otherwise it is closed. ``sock``
        and ``asset`` are the sender's from now on (this process's descriptors are closed,
        or, for a kept connection, held until the answer is over).
        """
        head = head_bytes(plan, self.server, keep_alive=give_back is not None)
        pieces = [
            piece if isinstance(piece, bytes) else (piece.offset, piece.length)
            for piece in plan.body
        ]
        ident = next(self._ids)
        message = sendloop.encode_answer(
            ident, head, pieces, plan.file_bytes, keep=give_back is not None
        )
        pending = _Pending(asset.path, done, sock if give_back else None, give_back)
        failed: OSError | None = None
        try:
            # Under the lock: the reader of a process that died takes what it had under it
            # too, so an answer is either handed over and listed, or neither.
            with self._lock:
                for _attempt in range(2):  # a process found dead is replaced once
                    child = self._running()
                    try:
                        child.send(message, [sock.fileno(), asset.fd])
                    except OSError as exc:
                        child.lost(exc)
                        failed = exc
                        continue
                    child.pending[ident] = pending
                    failed = None
                    break
        finally:
            asset.close()
            if failed is not None:
                close_gently(sock)
            elif give_back is None:
                sock.close()  # the sender process's copy is the connection now
        if failed is not None:
            log.warning("asset %s not handed to the sender process: %s", asset.path, failed)
            _record(asset.path, done, Sent(0, 0.0, complete=False))

    def _running(self) -> "_Child":
        """The sender process, started anew if there is none (call with the lock held)."""
        if self._stopping:
            raise OSError("the asset sender has stopped")
        if self._child is None or self._child.gone:
            self._child = _Child(self)
        return self._child

    def shutdown(self) -> None:
        """Stop the sender process (answers under way are cut off and recorded as such)."""
        with self._lock:
            self._stopping = True
            child = self._child
        if child is not None:
            child.stop()
        self.records.shutdown(wait=True)


class _Child:
    """One sender process, the server's end of its control socket, what it has, and the
    thread that reads its reports."""

    def __init__(self, owner: AssetSender) -> None:
        self.owner = owner
        #: Answers the process has, by id (under ``owner._lock``).
        self.pending: dict[int, _Pending] = {}
        self.gone = False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A send that cannot go within this fails (the process is stuck) instead of
        # holding a request thread for ever.
        timeval = struct.pack("ll", HANDOFF_TIMEOUT_SECONDS, 0)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        self.control = ours
        cpus = ",".join(str(cpu) for cpu in sorted(ALLOWED_CPUS or ()))
        arguments = [str(theirs.fileno()), str(owner.loops), str(owner.send_timeout)]
        arguments += [str(owner.sweep), cpus]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-S", sendloop.__file__, *arguments],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        try:  # it says so once it runs where it should (on every CPU)
            ours.settimeout(STARTUP_TIMEOUT_SECONDS)
            ready = ours.recv(sendloop.MESSAGE_BYTES)
            ours.settimeout(None)
        except OSError as exc:
            ready = f"{exc}".encode()
        if ready != sendloop.READY:
            self.process.kill()
            self.process.wait()
            ours.close()
            raise OSError(f"the asset sender process did not start: {ready!r}")
        self._reader = threading.Thread(
            target=self._read, name="asset-sender-reports", daemon=True
        )
        self._reader.start()

    def send(self, message: bytes, fds: list[int]) -> None:
        """Hand an answer over: ``message`` with the connection and file descriptors."""
        socket.send_fds(self.control, [message], fds, socket.MSG_NOSIGNAL)

    def lost(self, exc: BaseException) -> None:
        """The process cannot be reached (dead, or stuck): make sure it is dead, and mark it
        gone, so that the next answer starts another (call with ``owner._lock`` held)."""
        if not self.gone:
            self.gone = True
            log.warning("asset sender process %d unreachable: %s", self.process.pid, exc)
            self.process.kill()
            with contextlib.suppress(OSError):
                self.control.shutdown(socket.SHUT_RDWR)

    def _read(self) -> None:
        while True:
            try:
                data = self.control.recv(sendloop.MESSAGE_BYTES)
            except OSError:
                data = b""
            if not data:
                break
            ident, sent, note = sendloop.decode_result(data)
            with self.owner._lock:
                pending = self.pending.pop(ident, None)
            if pending is not None:
                self._over(pending, sent, note)
        code = self.process.wait()  # it closed its end: it has exited, or is killed
        with self.owner._lock:  # said before a new process can take the next answer
            self.gone = True
            left, self.pending = list(self.pending.values()), {}
            if left or not self.owner._stopping:
                log.warning(
                    "asset sender process %d exited (code %s); %d download(s) cut off",
                    self.process.pid,
                    code,
                    len(left),
                )
        for pending in left:
            self._over(pending, Sent(0, time.monotonic() - pending.started, False), "")
        self.control.close()

    def _over(self, pending: _Pending, sent: Sent, note: str) -> None:
        if note:
            log.info("asset %s: %s", pending.path, note)
        if pending.sock is not None:
            if sent.complete and pending.give_back is not None and not self.owner._stopping:
                hand_back(pending.sock, pending.give_back)
            else:
                close_gently(pending.sock)
        try:
            self.owner.records.submit(_record, pending.path, pending.done, sent)
        except RuntimeError:  # stopped (this reader outlived its wait): record it here
            _record(pending.path, pending.done, sent)

    def stop(self) -> None:
        """Close the control socket's sending side: the process cuts off what it has,
        reports it and exits; killed if it has not within ``STOP_TIMEOUT_SECONDS``."""
        with contextlib.suppress(OSError):
            self.control.shutdown(socket.SHUT_WR)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("asset sender process %d did not stop: killed", self.process.pid)
            self.process.kill()
        self._reader.join(STOP_TIMEOUT_SECONDS)


def hand_back(sock: socket.socket, give_back: GiveBack) -> None:
    """Give a connection whose answer went out whole to ``give_back`` (the sender process
    has uncorked it already)."""
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

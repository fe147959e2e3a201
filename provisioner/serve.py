"""Running the server: migrate, start background jobs, serve with waitress, stop cleanly."""

import functools
import gc
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
from types import FrameType
from typing import Any

import flask_migrate
import waitress
from flask import Flask
from sqlalchemy.engine import make_url
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from provisioner.assets.sender import AssetSender
from provisioner.assets.sender import DroppedAnswerFilter
from provisioner.assets.sender import HandoffTask
from provisioner.extensions import db
from provisioner.logs import batch_while
from provisioner.logs import configure_logging
from provisioner.pxe.dnsmasq_conf import PxeError
from provisioner.pxe.supervisor import start_pxe
from provisioner.scheduler import start_scheduler
from provisioner.scheduler import stop_scheduler
from provisioner.version import VERSION
from provisioner.web.assets import SENDER_KEY
from provisioner.web.auth import startup_warnings
from provisioner.web.context import single_reads

log = logging.getLogger(__name__)

#: Connections held open at once. An open connection costs a descriptor and a few KB, not a
#: thread: waitress reads requests in its I/O loop and hands only whole requests to the
#: ``--threads`` request threads, so clients that send half a request, or one byte a second
#: (PXE firmware that gave up mid-request), cannot hold up the machines behind them.
CONNECTION_LIMIT = 2000
#: A connection that sends nothing for this long is closed (waitress checks every 30 s).
CHANNEL_TIMEOUT_SECONDS = 15
#: Connections beyond the limit wait here, in the kernel.
LISTEN_BACKLOG = 1024
#: Connections accepted per turn of waitress's I/O loop (waitress accepts one). Each turn
#: visits every open connection, so with 1,000 slow ones open a turn is slow, and clients
#: that connect anew for every request (iPXE, curl) got a third of their throughput.
ACCEPTS_PER_TURN = 64
#: Descriptors a server process needs besides its connections: database files and
#: connections, logs, webhook deliveries, the listening socket.
RESERVED_FILES = 256


class ServeError(Exception):
    """The server cannot start (for example, the port is taken)."""


def upgrade_database(app: Flask) -> None:
    """Apply any migrations the database lacks."""
    with app.app_context():
        flask_migrate.upgrade(directory=app.extensions["migrate"].directory)


def close_database(app: Flask) -> None:
    """Close the app's database connections: its engine's pool, and the connections its
    threads keep for single reads."""
    single_reads(app).dispose()
    with app.app_context():
        db.engine.dispose()


def describe_database(app: Flask) -> str:
    """The database URL with any password hidden, for logs."""
    return make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound with SO_REUSEPORT, so several server processes can share the port.

    The kernel spreads new connections over the processes: one Python process uses about
    one core (the GIL), so on a multi-core host a second process nearly doubles reads.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    return sock


def pin_to_one_cpu(index: int | None = None) -> int | None:
    """Keep this process, every thread of it, on one of the CPUs it may use; return which.

    ``index`` picks the CPU (a worker's number, so workers get different ones); without
    it the process stays on the CPU it is running on, which the kernel chose as the least
    busy, so separately started servers spread out too. A Python process runs Python on
    about one core at a time (the GIL), and its threads hand the GIL to each other around
    every SQLite call and socket operation: when they sit on different cores each
    hand-over wakes the other core (an inter-processor interrupt, a VM exit on a virtual
    machine). On this project's 2-core VM that tripled the CPU cost of a boot; pinned, a
    boot costs what it does from one thread. Does nothing where the process may use one
    CPU only or the platform cannot pin.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    current = _current_cpu() if index is None else None
    cpu = current if current in allowed else allowed[(index or 0) % len(allowed)]
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), {cpu})
        except ProcessLookupError:
            pass  # the thread has ended since it was listed
    return cpu


def _current_cpu() -> int | None:
    """The CPU this thread last ran on (field 39 of /proc/thread-self/stat), if known."""
    try:
        with open("/proc/thread-self/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None


def raise_open_file_limit(connections: int) -> int:
    """Raise this process's soft open-file limit to fit ``connections``; return how many fit.

    Many systems start services with a soft limit of 1,024 descriptors and a far higher
    hard one, which an unprivileged process may raise its soft limit to.
    """
    needed = connections + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(min(connections, target - RESERVED_FILES), 1)


def body_size_limit(app: Flask) -> int:
    """waitress's ``max_request_body_size`` for ``app``: a 413 before the body is buffered.

    waitress answers from the Content-Length header, or for a chunked body as soon as it has
    read that much (framing included), instead of spooling up to 1 GiB for the app to refuse;
    it refuses a body of the limit or more, hence the + 1.
    """
    return app.config["MAX_CONTENT_LENGTH"] + 1


class JsonErrorTask(ErrorTask):
    """waitress's own refusals (413, 400, 431...) in the app's JSON error envelope."""

    def execute(self) -> None:
        error = self.request.error
        message = error.body
        if error.code == 413:  # waitress's text names its own limit, one over the app's
            message = (
                f"The request body is over {self.channel.adj.max_request_body_size - 1} bytes"
            )
        body = json.dumps(
            {"code": error.code, "message": message, "status": error.reason, "success": False}
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    """A waitress connection that answers its refusals with ``JsonErrorTask``."""

    error_task_class = JsonErrorTask
    task_class = HandoffTask


def accept_in_batches(listener: BaseWSGIServer) -> None:
    """Make ``listener`` accept up to ``ACCEPTS_PER_TURN`` waiting connections at a time."""
    accept_one = listener.handle_accept

    def handle_accept() -> None:
        for _ in range(ACCEPTS_PER_TURN):
            before = len(listener.active_channels)
            accept_one()
            accepted = len(listener.active_channels)
            if accepted == before or accepted >= listener.adj.connection_limit:
                return  # none waiting (or accept failed), or full

    listener.handle_accept = handle_accept  # type: ignore[method-assign]


def others_connected(listeners: list[BaseWSGIServer]) -> bool:
    """Whether more than one connection is open: a client alone with the server (an
    installer, a test) finds each log line written before its answer."""
    return sum(len(listener.active_channels) for listener in listeners) > 1


def create_server(app: Flask, **adjustments: Any) -> Any:
    """A waitress server for ``app`` whose own error answers are JSON, like the app's, and
    that accepts waiting connections in batches; while other clients are connected, the log
    writes its lines in batches (``logs.BusyBatchingHandler``)."""
    dispatchers: dict = {}
    server = waitress.create_server(app, map=dispatchers, **adjustments)
    listeners = [each for each in dispatchers.values() if isinstance(each, BaseWSGIServer)]
    for listener in listeners:  # one per listening socket
        listener.channel_class = JsonErrorChannel
        accept_in_batches(listener)
    batch_while(functools.partial(others_connected, listeners))
    return server


def start_asset_sender(app: Flask) -> AssetSender:
    """The process that sends ``/assets`` bodies with ``os.sendfile`` (``assets.sender``)."""
    sender = AssetSender(f"provisioner/{VERSION}")
    app.extensions[SENDER_KEY] = sender
    logging.getLogger("waitress").addFilter(DroppedAnswerFilter())
    return sender


def serve(
    app: Flask,
    *,
    host: str,
    port: int,
    threads: int,
    connection_limit: int = CONNECTION_LIMIT,
    channel_timeout: int = CHANNEL_TIMEOUT_SECONDS,
    reuse_port: bool = False,
    migrate: bool = True,
    pin_cpu: bool = True,
    cpu_index: int | None = None,
    pxe: bool = True,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; with ``pin_cpu``, on one CPU (``pin_to_one_cpu``);
    with ``pxe`` and ``PXE = true``, with a proxy DHCP + TFTP server (dnsmasq) beside it."""
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    # waitress warns "Task queue depth is N" for every request that finds all threads busy:
    # under a boot storm that is one log line per request, written while holding the lock
    # the worker threads take their next request under.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    if migrate:
        upgrade_database(app)
    where = (
        {"sockets": [listening_socket(host, port)]} if reuse_port else {"host": host, "port": port}
    )
    cpu = pin_to_one_cpu(cpu_index) if pin_cpu else None
    connections = raise_open_file_limit(connection_limit)
    pxe_server = _start_pxe(app, host, port) if pxe else None
    try:
        sender = start_asset_sender(app)
    except OSError as exc:
        if pxe_server is not None:
            pxe_server.stop()
        close_database(app)
        raise ServeError(str(exc)) from None
    print(
        f"provisioner: serving on http://{host}:{port}/ "
        f"(database {describe_database(app)}, workflows {app.config['WORKFLOWS_DIR']}"
        f"{'' if cpu is None else f', CPU {cpu}'})",
        flush=True,
    )
    if connections < connection_limit:
        log.warning(
            "the open-file limit (RLIMIT_NOFILE) allows %d connections, not %d: raise it "
            "(LimitNOFILE= in the systemd unit, ulimit -n) or lower --connection-limit",
            connections,
            connection_limit,
        )
    for warning in startup_warnings(app):
        log.warning("%s", warning)
    _stop_on_sigterm()
    start_scheduler(app)
    try:
        server = create_server(
            app,
            **where,
            threads=threads,
            connection_limit=connections,
            channel_timeout=channel_timeout,
            # select() fails outright on a descriptor numbered 1,024 or more ("filedescriptor
            # out of range"), which a thousand open connections reach: waitress then dies.
            asyncore_use_poll=True,
            max_request_body_size=body_size_limit(app),
            ident=f"provisioner/{VERSION}",
            # The app reads X-Forwarded-For itself (TRUSTED_PROXIES, for gunicorn too) and
            # refuses proxied operator calls it cannot place; waitress would drop the headers.
            clear_untrusted_proxy_headers=False,
        )
        server.print_listen("Serving on http://{}:{}")
        # What start-up built (modules, the app, its schemas and routes: about 136,000
        # objects) lives as long as the process: moved out of the collector's sight, a full
        # collection no longer walks it. Each one had stopped every request thread for
        # 50-150 ms (bench http's p99); now it takes a few ms. Start-up's garbage goes
        # first: frozen, it would never be freed.
        gc.collect()
        gc.freeze()
        server.run()
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        stop_scheduler(app)
        if pxe_server is not None:
            pxe_server.stop()
        sender.shutdown()
        close_database(app)
        log.info("provisioner: stopped")


def _start_pxe(app: Flask, host: str, port: int) -> Any:
    """Start the PXE service (``provisioner.pxe``) if configured; a ``ServeError`` if it fails."""
    try:
        return start_pxe(app.config, app.instance_path, host, port)
    except PxeError as exc:
        close_database(app)
        raise ServeError(str(exc)) from None


def serve_workers(
    app: Flask,
    *,
    host: str,
    port: int,
    threads: int,
    workers: int,
    connection_limit: int = CONNECTION_LIMIT,
    channel_timeout: int = CHANNEL_TIMEOUT_SECONDS,
    pin_cpu: bool = True,
) -> int:
    """Run ``workers`` server processes sharing one port (SO_REUSEPORT); return the exit code.

    This process migrates the database once, starts the workers (each a full instance with
    its own scheduler, of which only the scheduler lease's holder runs the jobs; with
    ``pin_cpu`` each on a CPU of its own while there are enough), passes SIGTERM/SIGINT on
    to them and waits for all of them.
    """
    upgrade_database(app)
    configure_logging(app.config["LOG_LEVEL"], app.config["LOG_FORMAT"])
    pxe_server = _start_pxe(app, host, port)  # one dnsmasq, in this process
    command = [sys.executable, "-c", "from provisioner.cli import main; main()", "serve"]
    command += ["--host", host, "--port", str(port), "--threads", str(threads)]
    command += ["--connection-limit", str(connection_limit)]
    command += ["--channel-timeout", str(channel_timeout)]
    command += ["--reuse-port", "--no-migrate", "--no-pxe"]
    children = [
        subprocess.Popen(command + ([f"--cpu-index={n}"] if pin_cpu else ["--no-pin-cpu"]))
        for n in range(workers)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    if pxe_server is not None:
        pxe_server.stop()
    return max(codes, default=0)

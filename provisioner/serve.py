"""Running the server: migrate, start background jobs, serve with waitress, stop cleanly."""

import logging
import os
import signal
import socket
import subprocess
import sys
from types import FrameType

import flask_migrate
import waitress
from flask import Flask
from sqlalchemy.engine import make_url

from provisioner.auth import startup_warnings
from provisioner.context import single_reads
from provisioner.extensions import db
from provisioner.scheduler import start_scheduler
from provisioner.scheduler import stop_scheduler
from provisioner.version import VERSION

log = logging.getLogger(__name__)

#: waitress accepts 100 connections by default; past ~96 open connections its I/O thread
#: starves the thread committing to SQLite and writes collapse (measured). 32 keeps the
#: throughput and lets the kernel's listen backlog queue the rest.
CONNECTION_LIMIT = 32
#: Boot and report clients send small requests quickly; idle connections are dropped soon.
CHANNEL_TIMEOUT_SECONDS = 15
#: Connections beyond CONNECTION_LIMIT wait here, in the kernel.
LISTEN_BACKLOG = 1024


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


def serve(
    app: Flask,
    *,
    host: str,
    port: int,
    threads: int,
    reuse_port: bool = False,
    migrate: bool = True,
    pin_cpu: bool = True,
    cpu_index: int | None = None,
) -> None:
    """Serve ``app`` until SIGINT or SIGTERM; with ``pin_cpu``, on one CPU (``pin_to_one_cpu``)."""
    logging.basicConfig(
        level=app.config["LOG_LEVEL"], format="%(levelname)s %(name)s: %(message)s"
    )
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
    print(
        f"provisioner: serving on http://{host}:{port}/ "
        f"(database {describe_database(app)}, workflows {app.config['WORKFLOWS_DIR']}"
        f"{'' if cpu is None else f', CPU {cpu}'})",
        flush=True,
    )
    for warning in startup_warnings(app):
        log.warning("%s", warning)
    _stop_on_sigterm()
    start_scheduler(app)
    try:
        waitress.serve(
            app,
            **where,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT_SECONDS,
            ident=f"provisioner/{VERSION}",
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        stop_scheduler(app)
        close_database(app)
        log.info("provisioner: stopped")


def serve_workers(
    app: Flask, *, host: str, port: int, threads: int, workers: int, pin_cpu: bool = True
) -> int:
    """Run ``workers`` server processes sharing one port (SO_REUSEPORT); return the exit code.

    This process migrates the database once, starts the workers (each a full instance with
    its own scheduler, of which only the scheduler lease's holder runs the jobs; with
    ``pin_cpu`` each on a CPU of its own while there are enough), passes SIGTERM/SIGINT on
    to them and waits for all of them.
    """
    upgrade_database(app)
    command = [sys.executable, "-c", "from provisioner.cli import main; main()", "serve"]
    command += ["--host", host, "--port", str(port), "--threads", str(threads)]
    command += ["--reuse-port", "--no-migrate"]
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
    return max(codes, default=0)

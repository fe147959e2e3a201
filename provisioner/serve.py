"""Running the server: migrate, start background jobs, serve with waitress, stop cleanly."""

import logging
import signal
from types import FrameType

import flask_migrate
import waitress
from flask import Flask
from sqlalchemy.engine import make_url

from provisioner.auth import startup_warnings
from provisioner.extensions import db
from provisioner.scheduler import start_scheduler
from provisioner.scheduler import stop_scheduler

log = logging.getLogger(__name__)

#: waitress accepts 100 connections by default; past ~96 open connections its I/O thread
#: starves the thread committing to SQLite and writes collapse (measured). 32 keeps the
#: throughput and lets the kernel's listen backlog queue the rest.
CONNECTION_LIMIT = 32
#: Boot and report clients send small requests quickly; idle connections are dropped soon.
CHANNEL_TIMEOUT_SECONDS = 15


class ServeError(Exception):
    """The server cannot start (for example, the port is taken)."""


def upgrade_database(app: Flask) -> None:
    """Apply any migrations the database lacks."""
    with app.app_context():
        flask_migrate.upgrade(directory=app.extensions["migrate"].directory)


def describe_database(app: Flask) -> str:
    """The database URL with any password hidden, for logs."""
    return make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve(app: Flask, *, host: str, port: int, threads: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=app.config["LOG_LEVEL"], format="%(levelname)s %(name)s: %(message)s"
    )
    upgrade_database(app)
    print(
        f"provisioner: serving on http://{host}:{port}/ "
        f"(database {describe_database(app)}, workflows {app.config['WORKFLOWS_DIR']})",
        flush=True,
    )
    for warning in startup_warnings(app):
        log.warning("%s", warning)
    _stop_on_sigterm()
    start_scheduler(app)
    try:
        waitress.serve(
            app,
            host=host,
            port=port,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT_SECONDS,
            ident="provisioner",
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    finally:
        stop_scheduler(app)
        with app.app_context():
            db.engine.dispose()
        log.info("provisioner: stopped")

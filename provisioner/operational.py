"""Operational errors (database, files, ports) as one line naming the setting and the fix.

The CLI and the WSGI entry print this line instead of a traceback; ``--debug`` shows it.
"""

import errno

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.exc import OperationalError

from provisioner.config import ConfigError


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable)"


def describe(exc: BaseException, database_url: str | None = None) -> str | None:
    """The one-line message for an operational error, or None for a bug (keep the traceback)."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, OperationalError):
        where = f" {_shown_url(database_url)}" if database_url else ""
        return (
            f"database{where} unavailable: {_first_line(exc)}; check DATABASE_URL and that "
            "the database server is running (or the SQLite file's directory is writable)"
        )
    if isinstance(exc, PermissionError | FileNotFoundError | IsADirectoryError):
        return f"{exc.strerror}: {exc.filename}; check DATA_DIR, DATABASE_URL and permissions"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror}: stop the other server or choose another --port"
    return None

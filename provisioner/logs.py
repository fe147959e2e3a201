"""Server logging: its format (text with UTC timestamps, or JSON lines) and the access log.

Secrets never reach a log line: the access log leaves out headers (``Authorization``) and
redacts the values of query parameters and URL parts that may carry a token (``?token=`` on
report and install-config URLs, ``/seed/<token>/`` of cloud-init's seed).
"""

import json
import logging
import re
import sys
import time
from datetime import UTC
from datetime import datetime
from urllib.parse import parse_qsl
from urllib.parse import urlencode

from flask import Flask
from flask import g
from flask import request
from werkzeug.wrappers import Response

access_log = logging.getLogger("provisioner.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Query parameters whose values are replaced by ``REDACTED`` in the access log.
SECRET_PARAMETER = re.compile(r"token|secret|password|passwd|key|auth|signature", re.I)
REDACTED = "REDACTED"
#: ``LogRecord`` attributes every record has; anything else was passed as ``extra``.
_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class UtcFormatter(logging.Formatter):
    """Text lines stamped with an ISO 8601 UTC time."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _timestamp(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the ``extra`` fields and any error."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record to stderr in ``fmt`` ("text" or "json"), replacing any handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else UtcFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def redact_query(query: str) -> str:
    """The query string with the values of token-like parameters replaced."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode(
        [(key, REDACTED if SECRET_PARAMETER.search(key) else value) for key, value in pairs],
        safe=":/${}",
    )


def redacted_path() -> str:
    """The request path with token-like URL parts (``/seed/<token>/``) replaced."""
    path = request.path
    for name, value in (request.view_args or {}).items():
        if SECRET_PARAMETER.search(name) and isinstance(value, str) and value:
            path = path.replace(value, REDACTED)
    return path


def log_request(response: Response) -> Response:
    """Write the access-log line of this request."""
    started = g.get("request_started")
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    query = redact_query(request.query_string.decode("latin-1"))
    target = redacted_path() + (f"?{query}" if query else "")
    access_log.info(
        '%s "%s %s" %s %s %sms',
        request.remote_addr,
        request.method,
        target,
        response.status_code,
        response.content_length if response.content_length is not None else "-",
        elapsed_ms,
        extra={
            "client": request.remote_addr,
            "method": request.method,
            "path": target,
            "status": response.status_code,
            "duration_ms": elapsed_ms,
        },
    )
    return response


def init_app(app: Flask) -> None:
    """With ``ACCESS_LOG``, log one line per request (after the metrics hook started its
    timer). Off by default, as in gunicorn and waitress: a line per request costs about a
    tenth of a boot's CPU (measured with ``make bench``), and each boot logs its own line."""
    if app.config["ACCESS_LOG"]:
        app.after_request(log_request)

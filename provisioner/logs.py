"""Server logging: its format (text with UTC timestamps, or JSON lines) and the access log.

Secrets never reach a log line: the access log leaves out headers (``Authorization``) and
redacts the values of query parameters and URL parts that may carry a token (``?token=`` on
report and install-config URLs, ``/seed/<token>/`` of cloud-init's seed).
"""

import json
import logging
import os
import re
import sys
import threading
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


#: How long a line below WARNING may wait in ``BatchingStreamHandler`` before it is written.
FLUSH_SECONDS = 0.1


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


#: The last second stamped and its text (one tuple, so threads read a matching pair).
_second_stamp: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    """``record.created`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; the text of the second is kept, as
    one server logs many lines a second (a line per boot)."""
    global _second_stamp
    second = int(record.created)
    cached_second, text = _second_stamp
    if second != cached_second:
        moment = datetime.fromtimestamp(second, UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        _second_stamp = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


class BatchingStreamHandler(logging.StreamHandler):
    """A ``StreamHandler`` that writes lines below WARNING together, at most ``FLUSH_SECONDS``
    after the first of them, from a thread of its own.

    A ``StreamHandler`` writes and flushes each record: with a line per boot, that was a
    ``write`` per request, made while the request thread gave up the GIL to its 15 neighbours,
    and cost about a seventh of a boot's CPU under load (measured with ``bench http``).
    Here a request thread only formats its line and appends it. A WARNING or worse is
    written at once, after the lines before it, so a failure is never waiting in memory
    and the order of lines is kept. Whatever is left is written by ``flush`` and ``close``,
    which ``logging.shutdown`` calls at exit.
    """

    def __init__(self, stream: object = None, interval: float = FLUSH_SECONDS) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.interval = interval
        self._pending: list[str] = []
        self._wake = threading.Event()
        self._writer_pid: int | None = None  # the process whose writer thread runs

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s line; write the queue now for a WARNING or worse.

        ``Handler.handle`` calls this holding the handler's lock.
        """
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING:
            self._write_pending(record)
        elif len(self._pending) == 1:
            self._start_writer()
            self._wake.set()

    def flush(self) -> None:
        """Write the queued lines and flush the stream."""
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def close(self) -> None:
        """Write the queued lines, then close as a ``StreamHandler`` does."""
        self.flush()
        super().close()

    def _write_pending(self, record: logging.LogRecord | None = None) -> None:
        """Write and flush the queued lines (the caller holds the lock)."""
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            self.stream.write(text)
            if hasattr(self.stream, "flush"):
                self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit
            if record is not None:
                self.handleError(record)

    def _start_writer(self) -> None:
        pid = os.getpid()
        if self._writer_pid == pid:
            return
        self._writer_pid = pid  # a forked child starts its own writer
        thread = threading.Thread(target=self._write_loop, name="log-writer", daemon=True)
        thread.start()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            # Gather what the next moment brings into the same write.
            time.sleep(self.interval)
            self.acquire()
            try:
                self._wake.clear()
                self._write_pending()
            finally:
                self.release()


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record to stderr in ``fmt`` ("text" or "json"), replacing any handler."""
    handler = BatchingStreamHandler(sys.stderr)
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

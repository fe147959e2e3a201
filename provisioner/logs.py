"""Server logging: its format (text with UTC timestamps, or JSON lines) and the access log.

Secrets never reach a log line: the access log leaves out headers (``Authorization``) and
redacts the values of query parameters and URL parts that may carry a token (``?token=`` on
report and install-config URLs, ``/seed/<token>/`` of cloud-init's seed).
"""

import contextlib
import json
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
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


#: The last second stamped, and its text.
_second_stamp: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    """``record.created`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; the text of the second is kept, as
    one server logs many lines a second (a line per boot)."""
    global _second_stamp
    second = int(record.created)
    cached_second, text = _second_stamp
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_stamp = (second, text)
    return f"{text}.{int(record.msecs):03d}Z"


#: The longest a line waits in memory while the server is busy.
FLUSH_SECONDS = 0.1


def never_busy() -> bool:
    """The busy probe of a handler no server has told of its load: write every line at once."""
    return False


class BusyBatchingHandler(logging.StreamHandler):
    """A ``StreamHandler`` that writes each line at once while the server is quiet, and
    the lines below WARNING together, at most ``interval`` late, while it is busy.

    A ``StreamHandler`` formats, writes and flushes each record holding the handler's lock:
    with a line per boot, that is a ``write`` per request, and 16 request threads queueing
    for the lock of whichever of them the GIL left holding it (``bench http``: about a
    tenth of a boot). Here a line is formatted without the lock and queued, and:

    - while ``busy()`` is false (``serve``: at most one client connected; start-up) it is
      written at once, so a client alone with the server finds in the log every line logged
      before its answer;
    - while it is true, it waits, and a thread of the handler's own writes the waiting lines
      ``interval`` after the first of them: one ``write`` for many lines;
    - a WARNING or worse is written at once, after the lines before it, so the order of
      lines is kept and a failure never waits in memory;
    - ``flush`` and ``close`` (``logging.shutdown`` at exit) write what is left; only a
      SIGKILL loses up to ``interval`` of INFO lines.

    Lines are written only under the lock, each write taking every line queued until then.
    """

    def __init__(self, stream: object = None, interval: float = FLUSH_SECONDS) -> None:
        super().__init__(stream)  # type: ignore[arg-type]
        self.interval = interval
        self.busy: Callable[[], bool] = never_busy
        self._pending: deque[str] = deque()  # appended and taken without the lock
        self._wake = threading.Event()
        self._writer_started = False

    def handle(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        """Filter and emit ``record`` without taking the lock (``emit`` takes it to write)."""
        allowed = self.filter(record)
        if allowed:
            self.emit(allowed if isinstance(allowed, logging.LogRecord) else record)
        return bool(allowed)

    def emit(self, record: logging.LogRecord) -> None:
        """Queue ``record``'s line; write the queue now unless the server is busy."""
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's own rule: report, never raise
            self.handleError(record)
            return
        self._pending.append(line)
        if record.levelno >= logging.WARNING or not self.busy():
            with self.lock:  # type: ignore[union-attr]
                self._write_pending(record)
        elif not self._wake.is_set():
            self._start_writer()
            self._wake.set()

    def flush(self) -> None:
        """Write the waiting lines and flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def close(self) -> None:
        """Write the waiting lines, then close as a ``StreamHandler`` does."""
        self.flush()
        super().close()

    def _write_pending(self, record: logging.LogRecord | None = None) -> None:
        """Write and flush the lines queued so far (the caller holds the lock)."""
        lines = []
        with contextlib.suppress(IndexError):
            while True:
                lines.append(self._pending.popleft())
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as StreamHandler.emit
            if record is not None:
                self.handleError(record)

    def _start_writer(self) -> None:
        if not self._writer_started:
            self._writer_started = True
            threading.Thread(target=self._write_loop, name="log-writer", daemon=True).start()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # what the next moment brings goes in the same write
            with self.lock:  # type: ignore[union-attr]
                self._wake.clear()  # before taking the lines: a line after them sets it
                self._write_pending()


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record to stderr in ``fmt`` ("text" or "json"), replacing any handler
    (a ``BusyBatchingHandler``: ``batch_while`` tells it when the server is busy)."""
    handler = BusyBatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else UtcFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # No line shows where it was logged from, nor the thread or process (the logging HOWTO's
    # "Optimization"): each record would look them up (a stack walk, for the caller).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def batch_while(busy: Callable[[], bool]) -> None:
    """Let the root logger's ``BusyBatchingHandler`` batch lines while ``busy()``."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BusyBatchingHandler):
            handler.busy = busy


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

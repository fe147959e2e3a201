"""The server's log handler: while the server is busy, lines below WARNING are written
together by a thread of the handler's own; while it is quiet, and for a WARNING, at once;
nothing is lost at flush, close or exit."""

import io
import logging
import threading
import time

from provisioner.logs import BusyBatchingHandler
from provisioner.logs import UtcFormatter

#: Long enough that the writer thread never writes during a test that does not wait for it.
NEVER = 3600.0
DEADLINE_SECONDS = 30.0


def logger_with(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def busy_handler(stream: io.StringIO, interval: float = NEVER) -> BusyBatchingHandler:
    handler = BusyBatchingHandler(stream, interval=interval)
    handler.busy = lambda: True
    return handler


def test_while_quiet_each_line_is_written_at_once():
    stream = io.StringIO()
    log = logger_with(BusyBatchingHandler(stream, interval=NEVER), "test.batching.quiet")
    log.info("boot one")
    assert stream.getvalue() == "INFO boot one\n"
    log.info("boot two")
    assert stream.getvalue() == "INFO boot one\nINFO boot two\n"


def test_while_busy_lines_wait_and_the_first_quiet_line_writes_them_in_order():
    stream = io.StringIO()
    handler = busy_handler(stream)
    log = logger_with(handler, "test.batching.busy")
    log.info("boot one")
    log.info("boot two")
    assert stream.getvalue() == ""
    handler.busy = lambda: False
    log.info("boot three")
    assert stream.getvalue() == "INFO boot one\nINFO boot two\nINFO boot three\n"


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    stream = io.StringIO()
    log = logger_with(busy_handler(stream), "test.batching.warning")
    log.info("boot one")
    log.warning("database unavailable")
    assert stream.getvalue().splitlines() == ["INFO boot one", "WARNING database unavailable"]
    log.info("boot two")
    log.error("boot failed")
    assert stream.getvalue().splitlines()[2:] == ["INFO boot two", "ERROR boot failed"]


def test_flush_and_close_write_what_is_left():
    stream = io.StringIO()
    handler = busy_handler(stream)
    log = logger_with(handler, "test.batching.close")
    log.info("boot")
    handler.flush()
    assert stream.getvalue() == "INFO boot\n"
    log.info("last boot")
    handler.close()
    assert stream.getvalue() == "INFO boot\nINFO last boot\n"


def test_under_steady_load_the_writer_thread_writes_the_lines_in_order():
    stream = io.StringIO()
    log = logger_with(busy_handler(stream, interval=0.01), "test.batching.thread")

    def lines(n: int) -> None:
        for i in range(50):
            log.info("t%d line %d", n, i)

    writers = [threading.Thread(target=lines, args=(n,)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while stream.getvalue().count("\n") < 200 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for the writer thread's output, not timing it
    written = stream.getvalue().splitlines()
    assert len(written) == 200
    for n in range(4):
        assert [line for line in written if line.startswith(f"INFO t{n} ")] == [
            f"INFO t{n} line {i}" for i in range(50)
        ]


def test_utc_stamp_keeps_milliseconds_within_one_second():
    formatter = UtcFormatter("%(asctime)s %(message)s")
    first = logging.makeLogRecord({"msg": "a", "created": 1_800_000_000.004, "msecs": 4.0})
    second = logging.makeLogRecord({"msg": "b", "created": 1_800_000_000.987, "msecs": 987.0})
    third = logging.makeLogRecord({"msg": "c", "created": 1_800_000_001.5, "msecs": 500.0})
    assert formatter.format(first) == "2027-01-15T08:00:00.004Z a"
    assert formatter.format(second) == "2027-01-15T08:00:00.987Z b"
    assert formatter.format(third) == "2027-01-15T08:00:01.500Z c"

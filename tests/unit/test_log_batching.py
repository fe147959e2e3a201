"""The server's log handler: lines below WARNING are written together, later; a WARNING
at once, after the lines before it; nothing is lost at flush, close or exit."""

import io
import logging
import threading
import time

from provisioner.logs import BatchingStreamHandler
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


def test_info_lines_wait_for_flush():
    stream = io.StringIO()
    log = logger_with(BatchingStreamHandler(stream, interval=NEVER), "test.batching.flush")
    log.info("boot one")
    log.info("boot two")
    assert stream.getvalue() == ""
    log.handlers[0].flush()
    assert stream.getvalue() == "INFO boot one\nINFO boot two\n"


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    stream = io.StringIO()
    log = logger_with(BatchingStreamHandler(stream, interval=NEVER), "test.batching.warning")
    log.info("boot one")
    log.warning("database unavailable")
    assert stream.getvalue() == "INFO boot one\nWARNING database unavailable\n"
    log.info("boot two")
    log.error("boot failed")
    assert stream.getvalue().splitlines()[2:] == ["INFO boot two", "ERROR boot failed"]


def test_close_writes_what_is_left():
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, interval=NEVER)
    log = logger_with(handler, "test.batching.close")
    log.info("last boot")
    handler.close()
    assert stream.getvalue() == "INFO last boot\n"


def test_the_writer_thread_writes_queued_lines_in_order():
    stream = io.StringIO()
    log = logger_with(BatchingStreamHandler(stream, interval=0.01), "test.batching.thread")
    writers = [
        threading.Thread(target=lambda n=n: [log.info("t%d line %d", n, i) for i in range(50)])
        for n in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    deadline = time.monotonic() + DEADLINE_SECONDS
    while stream.getvalue().count("\n") < 200 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling for the writer thread's output, not timing it
    lines = stream.getvalue().splitlines()
    assert len(lines) == 200
    for n in range(4):
        assert [line for line in lines if line.startswith(f"INFO t{n} ")] == [
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

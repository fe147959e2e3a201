"""``provisioner serve`` on a network with half-dead clients and hostile uploads.

1. 1,100 connections that send nothing, half a request line, or headers and half a
   body (PXE firmware that gave up mid-request) stay open while another client boots and
   reports: holding a connection does not take a request thread, and the server neither
   runs out of descriptors nor dies of select()'s 1,024-descriptor ceiling.
2. A 200 MB body, announced or chunked, is refused with 413 before it is read: the server
   neither buffers it in memory nor spools it to disk.
"""

import json
import os
import resource
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from contextlib import contextmanager

import pytest
from serverproc import ServerProcess
from serverproc import server_environment
from serverproc import sqlite_settings

pytestmark = pytest.mark.e2e

#: Past 1,024 descriptors in the server, where select() gives up.
SLOW_CLIENTS = 1100
MAC = "52:54:00:18:00:01"
#: The server starts with this soft open-file limit, lower than its connections need, as
#: under a service manager's default of 1,024; it must raise it itself.
LOW_SOFT_LIMIT = 256
#: Long enough that no slow client is dropped for idling however slowly the test runs.
LONG_CHANNEL_TIMEOUT = "600"
DEADLINE_SECONDS = 120
#: Partial requests the slow clients send, in turn: nothing, half a request line, headers
#: and half of the body they announce.
PARTIAL_REQUESTS = (
    b"",
    b"GET /api/v1/boot?mac=52:54:00:18",
    b"POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 64\r\n\r\n{"mac_address": "52:54',
)
HUGE_BODY_BYTES = 200 * 1024 * 1024
SEND_CHUNK = b"x" * (1024 * 1024)
#: How much the server may grow while refusing a huge body ("a few MB").
RSS_ALLOWANCE_BYTES = 8 * 1024 * 1024
#: How much it may write meanwhile (its log lines); spooling the body would be 200 MB.
WRITE_ALLOWANCE_BYTES = 1024 * 1024
MAX_BODY_BYTES = 64 * 1024
#: The app's JSON error envelope for a 413 (any message).
JSON_413 = {"code": 413, "status": "Request Entity Too Large", "success": False, "message": ""}


class LowFileLimitServer(ServerProcess):
    """``provisioner serve`` started under ``prlimit`` with a low soft open-file limit."""

    def command(self) -> list[str]:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = f"--nofile={LOW_SOFT_LIMIT}:{'unlimited' if hard < 0 else hard}"
        return ["prlimit", limit, "--", *super().command()]


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Let this process open the slow clients' sockets (soft limit raised to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * SLOW_CLIENTS + 256
    if 0 <= hard < needed:
        pytest.skip(f"the hard open-file limit ({hard}) is below the {needed} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds (from /proc/PID/fd)."""
    count = 0
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{entry}").startswith("socket:")
        except OSError:
            pass  # closed since it was listed
    return count


def wait_for_sockets(server: ServerProcess, count: int) -> int:
    """Wait (generously) until the server holds ``count`` sockets; return how many it holds."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while server.is_running() and time.monotonic() < deadline:
        if open_sockets(server.pid) >= count:
            break
        time.sleep(0.1)
    return open_sockets(server.pid) if server.is_running() else 0


@contextmanager
def slow_clients(server: ServerProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections, each having sent a partial request, closed on exit."""
    with ExitStack() as stack:
        sockets = []
        for index in range(count):
            sock = stack.enter_context(socket.create_connection((server.host, server.port)))
            sock.sendall(PARTIAL_REQUESTS[index % len(PARTIAL_REQUESTS)])
            sockets.append(sock)
        yield sockets


def is_open(sock: socket.socket) -> bool:
    """Whether the peer has neither closed nor reset ``sock`` (nor answered on it)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing to read: neither an answer nor an end of file
    except OSError:
        return False
    return False


@pytest.mark.skipif(not shutil.which("prlimit"), reason="prlimit (util-linux) is not installed")
def test_1100_slow_clients_do_not_stop_boots_and_reports(tmp_path, many_descriptors):
    env = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    server = LowFileLimitServer(
        env, tmp_path, name="slow", extra_args=["--channel-timeout", LONG_CHANNEL_TIMEOUT]
    )
    with server:
        with slow_clients(server, SLOW_CLIENTS) as idle:
            # Every slow client is accepted (a socket in the server, beside the listening
            # one), not left waiting in the kernel's listen backlog.
            held = wait_for_sockets(server, SLOW_CLIENTS + 1)
            assert held >= SLOW_CLIENTS + 1, server.log_tail()

            boot = server.get(f"/api/v1/boot?mac={MAC}")
            report = server.post_json("/api/v1/report", {"mac_address": MAC, "event": "heartbeat"})

            assert boot.status == 200, boot
            assert b"#!ipxe" in boot.body
            assert report.status == 200, report
            still_open = sum(is_open(sock) for sock in idle)
            assert still_open == SLOW_CLIENTS
        assert server.get("/health").status == 200
    assert "Traceback" not in server.log_text()


# -- oversized bodies ---------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def written_bytes(pid: int) -> int:
    """Bytes the process has passed to write(2) and the like (``wchar`` of /proc/PID/io)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError("no wchar line")


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def upload(server: ServerProcess, *, chunked_body: bool) -> tuple[bytes, bool]:
    """POST a 200 MB report body; return the raw answer and whether all of it was sent.

    One thread sends while this one reads, as a client that watches for an early answer.
    """
    framing = b"Transfer-Encoding: chunked" if chunked_body else b"Content-Length: %d"
    if not chunked_body:
        framing %= HUGE_BODY_BYTES
    head = (
        b"POST /api/v1/report HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"%s\r\nConnection: close\r\n\r\n" % (server.host.encode(), server.port, framing)
    )
    chunk = chunked(SEND_CHUNK) if chunked_body else SEND_CHUNK
    sent_all = threading.Event()

    def send(sock: socket.socket) -> None:
        try:
            sock.sendall(head)
            for _ in range(HUGE_BODY_BYTES // len(SEND_CHUNK)):
                sock.sendall(chunk)
            if chunked_body:
                sock.sendall(b"0\r\n\r\n")
            sent_all.set()
        except OSError:
            pass  # the server closed the connection: it will not read the rest

    with socket.create_connection((server.host, server.port)) as sock:
        sock.settimeout(DEADLINE_SECONDS)
        sender = threading.Thread(target=send, args=(sock,), daemon=True)
        sender.start()
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass  # the rest of the body reached a closed socket
        sender.join(DEADLINE_SECONDS)
    return answer, sent_all.is_set()


@pytest.fixture
def server(tmp_path) -> Iterator[ServerProcess]:
    env = server_environment(sqlite_settings(tmp_path, REPORT_AUTH="open"))
    with ServerProcess(env, tmp_path, name="bodies") as server:
        yield server


@pytest.mark.parametrize("chunked_body", [False, True], ids=["content-length", "chunked"])
def test_a_200_mb_body_is_refused_before_it_is_read(server, chunked_body):
    assert server.get(f"/api/v1/boot?mac={MAC}").status == 200
    rss_before = rss_bytes(server.pid)
    written_before = written_bytes(server.pid)

    answer, sent_all = upload(server, chunked_body=chunked_body)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), answer[:300]
    assert b"\r\nContent-Type: application/json" in head, head
    assert json.loads(body) | {"message": ""} == JSON_413
    assert not sent_all
    assert written_bytes(server.pid) - written_before < WRITE_ALLOWANCE_BYTES
    assert rss_bytes(server.pid) - rss_before < RSS_ALLOWANCE_BYTES
    assert server.get("/health").status == 200


def padded_report(size: int) -> bytes:
    """A heartbeat report of exactly ``size`` bytes (spaces before the closing brace)."""
    body = json.dumps({"mac_address": MAC, "event": "heartbeat"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_a_body_of_the_limit_reaches_the_app_and_one_byte_more_is_413(server):
    assert server.get(f"/api/v1/boot?mac={MAC}").status == 200

    headers = {"Content-Type": "application/json"}
    at_limit = server.request(
        "POST", "/api/v1/report", padded_report(MAX_BODY_BYTES), headers=headers
    )
    over = server.request(
        "POST", "/api/v1/report", padded_report(MAX_BODY_BYTES + 1), headers=headers
    )

    assert at_limit.status == 200, at_limit
    assert over.status == 413, over
    assert over.content_type == "application/json"
    assert over.body | {"message": ""} == JSON_413

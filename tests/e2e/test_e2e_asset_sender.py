"""``provisioner serve`` sends asset bodies from a process of its own: it lives and dies
with the server, and a kept connection goes from it back to waitress."""

import os
import signal
import socket
from pathlib import Path

import pytest
from polling import wait_for
from serverproc import process_alive
from serverproc import start_server

pytestmark = pytest.mark.e2e

DATA = os.urandom(2 * 1024 * 1024 + 5)
DEADLINE_SECONDS = 30  # only catches a hang


def children_of(pid: int) -> dict[int, str]:
    """Processes whose parent is ``pid``, with their command lines (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode()
            except (OSError, IndexError):
                continue
            if parent == pid:
                found[int(entry)] = command
    return found


def sender_of(pid: int) -> int:
    """The one sender process of serving process ``pid``."""
    [sender] = [child for child, command in children_of(pid).items() if "sendloop" in command]
    return sender


def wait_gone(pid: int) -> bool:
    return wait_for(lambda: not process_alive(pid), f"process {pid} to exit", DEADLINE_SECONDS)


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One answer with a Content-Length body: head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {len(body)} of {length} bytes"
        body += chunk
    return head, body


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    directory = tmp_path / "assets"
    directory.mkdir()
    (directory / "initrd.img").write_bytes(DATA)
    return directory


def test_kept_connection_serves_two_files_then_the_sender_stops_with_the_server(
    tmp_path, assets
) -> None:
    with start_server(tmp_path, threads=2, ASSETS_DIR=str(assets)) as server:
        sender = sender_of(server.pid)
        request = b"GET /assets/initrd.img HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
            for _ in range(2):  # the second request on the connection the sender gave back
                client.sendall(request)
                head, body = read_answer(client)
                assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: keep-alive" in head
                assert body == DATA
            client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head, _ = read_answer(client)
            assert head.startswith(b"HTTP/1.1 200")  # answered by waitress on the same socket
        assert server.stop() == 0
    assert wait_gone(sender)


def test_sender_process_exits_when_the_server_is_killed(tmp_path, assets) -> None:
    with start_server(tmp_path, threads=1, ASSETS_DIR=str(assets)) as server:
        sender = sender_of(server.pid)
        os.kill(server.pid, signal.SIGKILL)
        assert wait_gone(sender)


def test_a_killed_sender_process_is_replaced_on_the_next_download(tmp_path, assets) -> None:
    with start_server(tmp_path, threads=1, ASSETS_DIR=str(assets)) as server:
        first = sender_of(server.pid)
        os.kill(first, signal.SIGKILL)
        assert wait_gone(first)
        status, _, body = server.get("/assets/initrd.img")
        assert status == 200 and body == DATA
        assert sender_of(server.pid) != first
        server.wait_for_log(f"asset sender process {first}")  # it may be written later

"""The sender process on its own: socket pairs stand in for clients."""

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from polling import wait_for
from serverproc import process_alive

from provisioner.assets import sendloop
from provisioner.assets.files import open_asset
from provisioner.assets.http import plan
from provisioner.assets.sender import AssetSender
from provisioner.assets.sender import Sent

DATA = os.urandom(5 * 1024 * 1024 + 3)
WAIT = 30


@pytest.fixture
def asset_root(tmp_path: Path) -> Path:
    (tmp_path / "big").write_bytes(DATA)
    return tmp_path


@pytest.fixture
def asset_sender():
    running = AssetSender("test/1")
    yield running
    running.shutdown()


def submit(asset_sender: AssetSender, root: Path, headers: dict[str, str], give_back=None):
    ours, theirs = socket.socketpair()
    opened = open_asset(root, "big")
    answer = plan("GET", headers, opened.size, opened.mtime_ns, opened.path)
    results: list[Sent] = []
    finished = threading.Event()

    def done(sent: Sent) -> None:
        results.append(sent)
        finished.set()

    asset_sender.submit(ours, opened, answer, done, give_back)
    return theirs, results, finished


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sends_head_and_whole_body_then_reports(asset_sender, asset_root) -> None:
    client, results, finished = submit(asset_sender, asset_root, {})
    with client:
        raw = read_all(client)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in head and f"Content-Length: {len(DATA)}".encode() in head
    assert body == DATA
    assert finished.wait(WAIT)
    assert results[0].file_bytes == len(DATA) and results[0].complete


def test_several_at_once(asset_sender, asset_root) -> None:
    clients = [submit(asset_sender, asset_root, {"range": "bytes=100-"}) for _ in range(8)]
    bodies = []
    for client, _, _ in clients:  # read them one after another: the others must wait
        with client:
            bodies.append(read_all(client).partition(b"\r\n\r\n")[2])
    assert bodies == [DATA[100:]] * 8
    assert all(finished.wait(WAIT) for _, _, finished in clients)


def test_client_gone_is_recorded_as_cut_off(asset_sender, asset_root) -> None:
    client, results, finished = submit(asset_sender, asset_root, {})
    client.recv(1000)
    client.close()
    assert finished.wait(WAIT)
    assert not results[0].complete and results[0].file_bytes < len(DATA)


def test_a_client_that_takes_nothing_is_dropped(asset_root) -> None:
    running = AssetSender("test/1", send_timeout=0, sweep=0.05)
    try:
        client, results, finished = submit(running, asset_root, {})
        with client:
            assert finished.wait(WAIT)  # never read: the sweep drops it
        assert not results[0].complete
    finally:
        running.shutdown()


class Taker:
    """Stands in for waitress taking a kept connection back: answers b"next" on it."""

    def __init__(self) -> None:
        self.taken: list[socket.socket] = []
        self.event = threading.Event()

    def __call__(self, sock: socket.socket) -> None:
        self.taken.append(sock)
        sock.setblocking(True)
        sock.sendall(b"next")
        self.event.set()


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"closed after {len(data)} of {count} bytes"
        data += chunk
    return data


def test_kept_connection_is_given_back_after_the_whole_answer(asset_sender, asset_root) -> None:
    taker = Taker()
    client, results, finished = submit(asset_sender, asset_root, {}, give_back=taker)
    with client:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += read_exactly(client, 1)
        assert b"Connection: keep-alive\r\n" in head and b"Connection: close" not in head
        assert read_exactly(client, len(DATA)) == DATA
        assert taker.event.wait(WAIT)
        assert read_exactly(client, 4) == b"next"  # the same connection, still open
    assert finished.wait(WAIT) and results[0].complete
    for sock in taker.taken:
        sock.close()


def test_cut_off_connection_is_not_given_back(asset_sender, asset_root) -> None:
    taker = Taker()
    client, results, finished = submit(asset_sender, asset_root, {}, give_back=taker)
    client.recv(1000)
    client.close()
    assert finished.wait(WAIT)
    assert not results[0].complete and not taker.taken


def test_the_sender_is_a_process_of_its_own_holding_the_descriptors(asset_sender, asset_root):
    """After submit this process holds neither the file nor a closed connection: the
    sender process got its own descriptors (SCM_RIGHTS) and sends from them."""
    assert asset_sender.pid != os.getpid() and process_alive(asset_sender.pid)
    ours, theirs = socket.socketpair()
    opened = open_asset(asset_root, "big")
    answer = plan("GET", {}, opened.size, opened.mtime_ns, opened.path)
    finished = threading.Event()
    asset_sender.submit(ours, opened, answer, lambda sent: finished.set())
    assert opened.fd == -1 and ours.fileno() == -1  # ours are closed
    with theirs:
        assert read_all(theirs).partition(b"\r\n\r\n")[2] == DATA
    assert finished.wait(WAIT)


def test_several_ranges_go_out_as_multipart(asset_sender, asset_root) -> None:
    client, results, finished = submit(asset_sender, asset_root, {"range": "bytes=0-9,100-199"})
    with client:
        raw = read_all(client)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206 Partial Content\r\n")
    boundary = head.split(b"boundary=")[1].split(b"\r\n")[0]
    parts = body.split(b"--" + boundary)
    assert parts[1].endswith(b"\r\n\r\n" + DATA[0:10] + b"\r\n")
    assert parts[2].endswith(b"\r\n\r\n" + DATA[100:200] + b"\r\n")
    assert parts[3] == b"--\r\n"
    assert finished.wait(WAIT) and results[0].file_bytes == 110 and results[0].complete


def test_a_dead_sender_process_cuts_off_its_answers_and_is_replaced(asset_sender, asset_root):
    taker = Taker()
    client, results, finished = submit(asset_sender, asset_root, {}, give_back=taker)
    first = asset_sender.pid
    with client:
        assert client.recv(1000).startswith(b"HTTP/1.1 200 OK")  # the process has it
        os.kill(first, signal.SIGKILL)
        assert finished.wait(WAIT)
        assert not results[0].complete and not taker.taken
        read_all(client)  # ends: this process closed its copy of the kept connection
    again, results, finished = submit(asset_sender, asset_root, {})
    with again:
        assert read_all(again).partition(b"\r\n\r\n")[2] == DATA
    assert finished.wait(WAIT) and results[0].complete
    assert asset_sender.pid != first and not process_alive(first)


def test_shutdown_cuts_off_what_is_under_way_and_leaves_no_process(asset_root) -> None:
    running = AssetSender("test/1")
    pid = running.pid
    client, results, finished = submit(running, asset_root, {}, give_back=Taker())
    with client:
        assert client.recv(1000).startswith(b"HTTP/1.1 200 OK")
        running.shutdown()
        assert finished.is_set() and not results[0].complete
        read_all(client)  # closed, not given back
    assert not process_alive(pid)
    with pytest.raises(OSError):
        submit(running, asset_root, {})


def test_the_sender_process_exits_when_its_server_dies(asset_root, tmp_path) -> None:
    """A server killed outright (no shutdown) leaves no sender process behind: the sender
    reads the end of its control socket and exits."""
    script = tmp_path / "server.py"
    script.write_text(
        "import sys, time\n"
        "from provisioner.assets.sender import AssetSender\n"
        "sender = AssetSender('test/1')\n"
        "print(sender.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    server = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        pid = int(server.stdout.readline())
        assert process_alive(pid)
        server.kill()
        server.wait()
        wait_for(lambda: not process_alive(pid), "the sender process to exit", WAIT)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
        server.stdin.close()


def test_messages_carry_bytes_and_slices_unchanged() -> None:
    head = b"HTTP/1.1 206 Partial Content\r\nX: \xff\x00\r\n\r\n"
    pieces = [b"\r\n--b\r\n\x80", (0, 10), b"tail", (1 << 40, 3)]
    message = sendloop.encode_answer(7, head, pieces, 1 << 41, keep=True)
    assert sendloop.decode_answer(message) == (7, [head, *pieces], 1 << 41, True)
    sent = Sent(123, 0.5, complete=False)
    note = "client gone: [Errno 104] Connection reset by peer"
    assert sendloop.decode_result(sendloop.encode_result(9, sent, note)) == (9, sent, note)


def test_an_answer_that_came_without_its_descriptors_is_reported_cut_off() -> None:
    """The kernel drops passed descriptors the receiver has no room for: the sender
    process then reports the answer as not sent (so the server records it and lets go of
    the connection), and goes on; it stops when the server closes its end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    running = threading.Thread(target=sendloop.run, args=(theirs, 1))
    running.start()
    try:
        assert ours.recv(100) == sendloop.READY
        client, peer = socket.socketpair()
        with client, peer:
            message = sendloop.encode_answer(5, b"HTTP/1.1 200 OK\r\n\r\n", [(0, 10)], 10, False)
            socket.send_fds(ours, [message], [peer.fileno()])  # the file is missing
            ident, sent, note = sendloop.decode_result(ours.recv(sendloop.MESSAGE_BYTES))
        assert ident == 5 and sent == Sent(0, 0.0, complete=False) and "descriptors" in note
    finally:
        ours.shutdown(socket.SHUT_WR)
        running.join(WAIT)
        ours.close()
    assert not running.is_alive()

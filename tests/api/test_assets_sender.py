"""The sending loop on its own: socket pairs stand in for clients."""

import os
import socket
import threading
from pathlib import Path

import pytest

from provisioner.assets import sender as sender_module
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


def test_a_client_that_takes_nothing_is_dropped(monkeypatch, asset_root) -> None:
    monkeypatch.setattr(sender_module, "SEND_TIMEOUT_SECONDS", 0)
    monkeypatch.setattr(sender_module, "SWEEP_SECONDS", 0.05)
    running = AssetSender("test/1")
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

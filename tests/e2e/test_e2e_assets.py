"""End to end: ``/assets`` from the real ``provisioner serve``, fetched with curl.

Under ``serve`` an asset body leaves from a sender thread with ``os.sendfile``, so these
tests check the bytes on the wire: whole files, ranges, multipart, 416, conditional
requests, resumed downloads, traversal, a connection reused after a boot script and after
downloads (keep-alive: the sender gives the connection back to waitress), closed when the
client asks, that a client which stops reading holds no request thread, and the one event
a node gets per download.
"""

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from polling import wait_for
from serverproc import ServerProcess
from serverproc import start_server

pytestmark = pytest.mark.e2e

CURL = shutil.which("curl")
SIZE = 3 * 1024 * 1024 + 17
#: Over waitress's outbuf_high_watermark (16 MiB): a request thread writing this body
#: itself would block once the client stops reading.
BIG_SIZE = 64 * 1024 * 1024
MAC = "52:54:00:0a:55:e7"
WORKFLOW = """\
id: assets-os
name: Assets OS
kernel_path: os/linux
initrd_path: ${assets}/os/initrd.img
cmdline: console=ttyS0 url=${assets}/os/
"""
NO_PROXY = {key: "" for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY")}
EVENT_DEADLINE_SECONDS = 30


@pytest.fixture
def served(tmp_path: Path):
    if CURL is None:
        pytest.skip("curl is not installed (make e2e-deps)")
    assets = tmp_path / "assets"
    (assets / "os").mkdir(parents=True)
    data = os.urandom(SIZE)
    (assets / "os" / "initrd.img").write_bytes(data)
    (assets / "os" / "linux").write_bytes(data[:100_000])
    with (assets / "big.img").open("wb") as big:  # sparse: beyond what waitress buffers
        big.truncate(BIG_SIZE)
    (tmp_path / "secret").write_text("outside the assets directory")
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "assets-os.yaml").write_text(WORKFLOW)
    with start_server(
        tmp_path, threads=1, ASSETS_DIR=str(assets), WORKFLOWS_DIR=str(workflows)
    ) as server:
        yield server, data


def curl(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [CURL, "--silent", "--show-error", "--max-time", "60", *args]
    env = os.environ | NO_PROXY
    return subprocess.run(command, capture_output=True, env=env, check=False, timeout=90)


def head_and_body(raw: bytes) -> tuple[str, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def header(head: str, name: str) -> str:
    """A header's value (names compare case-insensitively: waitress writes ``Etag``)."""
    for line in head.splitlines():
        key, _, value = line.partition(": ")
        if key.lower() == name.lower():
            return value
    raise AssertionError(f"no {name} in {head!r}")


def test_whole_file_range_multipart_and_416(served, tmp_path: Path) -> None:
    server, data = served
    url = f"{server.url}/assets/os/initrd.img"
    out = tmp_path / "whole"
    result = curl(server, "-D", "-", "-o", str(out), url)
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    head = result.stdout.decode()
    assert head.startswith("HTTP/1.1 200")
    assert f"Content-Length: {SIZE}\r\n" in head
    assert "Connection: keep-alive" in head  # sent by the sendfile sender, not by waitress

    result = curl(server, "-i", "-r", "1000-1999", url)
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/1.1 206")
    assert f"Content-Range: bytes 1000-1999/{SIZE}" in head
    assert body == data[1000:2000]

    result = curl(server, "-i", "-r", "0-4,-5", url)
    head, body = head_and_body(result.stdout)
    assert "multipart/byteranges; boundary=" in head
    assert data[:5] in body and data[-5:] in body
    assert f"Content-Length: {len(body)}" in head

    result = curl(server, "-i", "-r", f"{SIZE}-", url)
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/1.1 416")
    assert f"Content-Range: bytes */{SIZE}" in head


def test_head_and_conditional(served) -> None:
    server, data = served
    url = f"{server.url}/assets/os/initrd.img"
    head = curl(server, "-I", url).stdout.decode()
    assert head.startswith("HTTP/1.1 200") and f"Content-Length: {SIZE}" in head
    etag = header(head, "ETag")
    modified = header(head, "Last-Modified")
    result = curl(server, "-i", "-H", f"If-None-Match: {etag}", url)
    assert result.stdout.startswith(b"HTTP/1.1 304")
    result = curl(server, "-i", "-H", f"If-Modified-Since: {modified}", url)
    assert result.stdout.startswith(b"HTTP/1.1 304")
    result = curl(server, "-i", "-r", "0-9", "-H", 'If-Range: "stale"', url)
    head, body = head_and_body(result.stdout)
    assert head.startswith("HTTP/1.1 200") and body == data


def test_resume_with_curl(served, tmp_path: Path) -> None:
    server, data = served
    out = tmp_path / "resumed"
    out.write_bytes(data[:123_457])
    result = curl(server, "-C", "-", "-o", str(out), f"{server.url}/assets/os/initrd.img")
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data


def test_traversal_and_listing_refused(served) -> None:
    server, _ = served
    for path in ("/assets/../secret", "/assets/%2e%2e/secret", "/assets/os/", "/assets/os"):
        result = curl(
            server, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", server.url + path
        )
        assert result.stdout == b"404", path


def test_connection_reused_after_a_boot_script(served, tmp_path: Path) -> None:
    """iPXE fetches the script, then the kernel on the same connection."""
    server, data = served
    out = tmp_path / "kernel"
    result = curl(
        server,
        "-o",
        "/dev/null",
        f"{server.url}/api/v1/boot?mac={MAC}",
        "-o",
        str(out),
        f"{server.url}/assets/os/linux",
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == data[:100_000]


def test_connection_kept_alive_after_downloads(served, tmp_path: Path) -> None:
    """curl fetches the kernel, the initrd and a boot script over its first connection."""
    server, data = served
    kernel, initrd = tmp_path / "kernel", tmp_path / "initrd"
    result = curl(
        server,
        "-v",
        "-o",
        str(kernel),
        f"{server.url}/assets/os/linux",
        "-o",
        str(initrd),
        f"{server.url}/assets/os/initrd.img",
        "-o",
        "/dev/null",
        f"{server.url}/api/v1/boot?mac={MAC}",
    )
    assert result.returncode == 0, result.stderr
    assert kernel.read_bytes() == data[:100_000] and initrd.read_bytes() == data
    log = result.stderr.decode(errors="replace")
    assert log.count("Re-using existing connection") == 2, log
    assert log.count("Connected to") == 1, log  # one connection, made once


def read_answer(sock: socket.socket, buffered: bytes = b"") -> tuple[str, bytes, bytes]:
    """One answer with a Content-Length body from ``sock``: head, body, and what followed."""
    raw = buffered
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {raw!r}"
        raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    length = int(header(head.decode("latin-1"), "Content-Length"))
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {len(rest)} of {length} bytes"
        rest += chunk
    return head.decode("latin-1"), rest[:length], rest[length:]


def test_one_connection_serves_range_file_and_api_in_turn(served) -> None:
    """Over one socket: a range, the whole file, a HEAD and a boot script, one after the
    other, each answered on the same connection; then ``Connection: close`` ends it."""
    server, data = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        request = "GET /assets/os/initrd.img HTTP/1.1\r\nHost: x\r\n"
        sock.sendall(f"{request}Range: bytes=10-19\r\n\r\n".encode())
        head, body, left = read_answer(sock)
        assert head.startswith("HTTP/1.1 206") and body == data[10:20] and not left
        sock.sendall(f"{request}\r\n".encode())
        head, body, left = read_answer(sock)
        assert head.startswith("HTTP/1.1 200") and body == data and not left
        sock.sendall(f"GET /api/v1/boot?mac={MAC} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head, body, left = read_answer(sock)
        assert head.startswith("HTTP/1.1 200") and body.startswith(b"#!ipxe") and not left
        sock.sendall(f"{request}Connection: close\r\n\r\n".encode())
        head, body, left = read_answer(sock)
        assert "Connection: close" in head and body == data
        assert left == b"" and sock.recv(1) == b""  # closed by the server after the body


def test_http_1_0_connection_closed_after_download(served) -> None:
    server, data = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"GET /assets/os/linux HTTP/1.0\r\n\r\n")
        head, body, left = read_answer(sock)
        assert "Connection: close" in head and body == data[:100_000]
        assert left == b"" and sock.recv(1) == b""


def test_stalled_download_holds_no_request_thread(served) -> None:
    """With one request thread, a client that stops reading must not stop boots."""
    server, _ = served
    with socket.create_connection(("127.0.0.1", server.port)) as stalled:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(b"GET /assets/big.img HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(12) == b"HTTP/1.1 200"
        for _ in range(5):
            assert server.get(f"/api/v1/boot?mac={MAC}").status == 200


def test_download_leaves_one_event(served, tmp_path: Path) -> None:
    server, data = served
    assert server.get(f"/api/v1/boot?mac={MAC}").status == 200  # registers, records its IP
    node = server.get(f"/api/v1/nodes/{MAC}").body["data"]
    assert node["ip_address"] == "127.0.0.1"
    assert server.patch_json(f"/api/v1/nodes/{MAC}", {"workflow_id": "assets-os"}).status == 200
    assert curl(server, "-o", "/dev/null", f"{server.url}/assets/os/initrd.img").returncode == 0
    assert curl(server, "-o", "/dev/null", f"{server.url}/assets/os/linux").returncode == 0

    def served_events() -> list[dict] | None:
        events = server.get(f"/api/v1/nodes/{MAC}/events").body["data"]
        found = [event for event in events if event["event_type"] == "asset_served"]
        return found if len(found) >= 2 else None

    served = wait_for(served_events, "two asset_served events", EVENT_DEADLINE_SECONDS)
    messages = sorted(event["message"] for event in served)
    assert len(messages) == 2, messages
    assert messages[0].startswith(f"initrd served: os/initrd.img, {SIZE} bytes in ")
    assert messages[1].startswith("kernel served: os/linux, 100000 bytes in ")

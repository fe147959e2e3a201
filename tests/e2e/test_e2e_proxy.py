"""End to end: a client -> a real nginx -> ``provisioner serve`` (waitress), no operator token.

nginx on the same host makes every client's TCP address 127.0.0.1. With ``TRUSTED_PROXIES``
set the server must see the real client through X-Forwarded-For (waitress drops the header
unless told to keep it); with none set, a proxied operator call must be refused rather than
answered as loopback; and a client on another network must never get the operator API.
"""

import http.client
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO_ROOT
from reverseproxy import LanClient
from reverseproxy import Nginx
from reverseproxy import nginx_binary
from serverproc import ServerProcess
from serverproc import sqlite_settings
from serverproc import start_server

pytestmark = pytest.mark.e2e

REPOSITORY = REPO_ROOT
BIN = Path(sys.executable).parent

MAC = "52:54:00:c0:00:01"
#: A second loopback address: what nginx sees as the client, distinct from its own 127.0.0.1.
LOCAL_CLIENT = "127.0.0.5"


@pytest.fixture(autouse=True)
def needs_nginx() -> None:
    if nginx_binary() is None:
        pytest.skip("nginx is not installed (make e2e-deps installs nginx-light)")


@pytest.fixture
def lan() -> Iterator[LanClient]:
    """A client on a network of its own (a namespace), when this machine can make one."""
    reason = LanClient.unavailable() or (
        None if shutil.which("curl") else "curl is not installed (make e2e-deps)"
    )
    if reason:
        pytest.skip(reason)
    with LanClient() as client:
        yield client


def request_from(
    source: str, url_port: int, method: str, path: str, body: object = None, **headers: str
) -> tuple[int, object]:
    """One request to nginx on 127.0.0.1 from the loopback address ``source``."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", url_port, timeout=20, source_address=(source, 0)
    )
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        answer = connection.getresponse()
        raw = answer.read()
    finally:
        connection.close()
    is_json = answer.headers.get_content_type() == "application/json"
    return answer.status, json.loads(raw) if is_json else raw.decode()


def node_ip(server: ServerProcess) -> str | None:
    """The node's recorded address, asked directly (loopback, no proxy)."""
    status, _, body = server.get(f"/api/v1/nodes/{MAC}")
    assert status == 200, body
    return body["data"]["ip_address"]


def last_event_ip(server: ServerProcess) -> str | None:
    """The address the node's newest event was recorded from."""
    status, _, body = server.get(f"/api/v1/nodes/{MAC}/events")
    assert status == 200, body
    return body["data"][0]["ip_address"]


def serve(tmp_path: Path, trusted_proxies: int):
    return start_server(tmp_path, TRUSTED_PROXIES=trusted_proxies, REPORT_AUTH="open")


def test_trusted_proxy_passes_the_real_client_address(tmp_path):
    """TRUSTED_PROXIES = 1: a boot and a report through nginx record the client's address,
    not nginx's, and a loopback client through the proxy is still the operator."""
    with serve(tmp_path, 1) as server, Nginx(tmp_path, server.url) as nginx:
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}).status == 201

        boot = request_from(LOCAL_CLIENT, nginx.port, "GET", f"/api/v1/boot?mac={MAC}")
        report = {"mac_address": MAC, "event": "heartbeat"}
        reported = request_from(LOCAL_CLIENT, nginx.port, "POST", "/api/v1/report", report)
        nodes = request_from(LOCAL_CLIENT, nginx.port, "GET", "/api/v1/nodes")

        assert boot[0] == 200 and reported[0] == 200 and nodes[0] == 200, (boot, reported, nodes)
        assert node_ip(server) == LOCAL_CLIENT
        assert last_event_ip(server) == LOCAL_CLIENT


def test_untrusted_proxy_is_refused_the_operator_api(tmp_path):
    """TRUSTED_PROXIES = 0 behind nginx: operator calls are 403 naming TRUSTED_PROXIES, while
    machines still boot through the proxy and direct loopback calls still work."""
    with serve(tmp_path, 0) as server, Nginx(tmp_path, server.url) as nginx:
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}).status == 201

        status, body = request_from("127.0.0.1", nginx.port, "GET", "/api/v1/nodes")
        minted = request_from("127.0.0.1", nginx.port, "POST", f"/api/v1/nodes/{MAC}/report-token")
        boot_status, script = request_from(
            "127.0.0.1", nginx.port, "GET", f"/api/v1/boot?mac={MAC}"
        )

        assert status == 403, body
        assert "TRUSTED_PROXIES" in body["message"]
        assert minted[0] == 403, minted
        assert boot_status == 200 and script.startswith("#!ipxe"), script
        assert server.get("/api/v1/nodes").status == 200


@pytest.mark.parametrize("trusted_proxies", [0, 1])
def test_client_on_the_network_never_gets_the_operator_api(tmp_path, lan, trusted_proxies):
    """A machine on another network, through nginx on the server's host, is refused the API,
    the dashboard and the token mint, even claiming to be 127.0.0.1, yet it can boot."""
    with (
        serve(tmp_path, trusted_proxies) as server,
        Nginx(tmp_path, server.url, (lan.host_address,)) as nginx,
    ):
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}).status == 201
        url = nginx.url(lan.host_address)

        nodes = lan.curl(url + "/api/v1/nodes")
        spoofed = lan.curl(url + "/api/v1/nodes", "-H", "X-Forwarded-For: 127.0.0.1")
        dashboard = lan.curl(url + "/")
        minted = lan.curl(url + f"/api/v1/nodes/{MAC}/report-token", "-X", "POST")
        boot = lan.curl(url + f"/api/v1/boot?mac={MAC}")

        for answer in (nodes, spoofed, dashboard, minted):
            assert answer[0] == 403, answer
        assert boot[0] == 200 and boot[1].startswith("#!ipxe"), boot
        if trusted_proxies:
            assert node_ip(server) == lan.client_address


class WsgiServer(ServerProcess):
    """``wsgi.py`` under another WSGI server: gunicorn, or waitress-serve told to keep the
    proxy headers (docs/security.md)."""

    def __init__(self, runner: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runner = runner

    def command(self) -> list[str]:
        where = f"{self.host}:{self.port}"
        if self.runner == "gunicorn":
            return [str(BIN / "gunicorn"), "--bind", where, "--workers", "1", "wsgi:app"]
        keep = "--no-clear-untrusted-proxy-headers"
        return [str(BIN / "waitress-serve"), f"--listen={where}", keep, "wsgi:app"]


@pytest.mark.parametrize("runner", ["gunicorn", "waitress-serve"])
@pytest.mark.parametrize("trusted_proxies", [0, 1])
def test_wsgi_entry_point_behind_nginx(tmp_path, runner, trusted_proxies):
    """Under wsgi.py's servers too, TRUSTED_PROXIES passes the client's address on (gunicorn
    always kept the header; waitress-serve needs the flag) and an unread proxy is refused."""
    if not (BIN / runner).exists():
        pytest.skip(f"{runner} is not installed (pip install -e '.[test]')")
    env = sqlite_settings(tmp_path, TRUSTED_PROXIES=trusted_proxies, SECRET_KEY="x" * 32)
    env["PYTHONPATH"] = str(REPOSITORY)  # wsgi.py lives at the repository's root
    with (
        WsgiServer(runner, env, tmp_path, name=runner) as server,
        Nginx(tmp_path, server.url) as nginx,
    ):
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}).status == 201

        boot = request_from(LOCAL_CLIENT, nginx.port, "GET", f"/api/v1/boot?mac={MAC}")
        nodes = request_from(LOCAL_CLIENT, nginx.port, "GET", "/api/v1/nodes")

        assert boot[0] == 200, boot
        if trusted_proxies:
            assert nodes[0] == 200, nodes
            assert node_ip(server) == LOCAL_CLIENT
        else:
            assert nodes[0] == 403 and "TRUSTED_PROXIES" in nodes[1]["message"], nodes
            assert node_ip(server) == "127.0.0.1"

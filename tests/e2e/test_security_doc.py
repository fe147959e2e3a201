"""docs/security.md's nginx example, run for real in front of ``provisioner serve``.

The block is taken from the page as it is, with only its addresses, certificate and log paths
moved into the test's directory and loopback ports: ``nginx -t`` must accept it, the TLS side
must pass operator requests with their token, the plain-HTTP side must pass the boot and
report endpoints and refuse the operator API, and its access log must not hold a report token
sent in a seed URL.
"""

import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from paths import REPO_ROOT
from serverproc import ServerProcess
from serverproc import free_port
from serverproc import sqlite_settings

pytestmark = pytest.mark.e2e

DOC = REPO_ROOT / "docs" / "security.md"
NGINX = "/usr/sbin/nginx"
API_TOKEN = "security-doc-api-token-0123456789"
SEED_TOKEN = "seedTOKENnever-in-the-log-42"
MAC = "52:54:00:5e:c0:01"
#: Generous: only turns an nginx that never listens into a failure.
START_DEADLINE_SECONDS = 30


def nginx_example() -> str:
    """The ```nginx block of docs/security.md."""
    return re.search(r"^```nginx\n(.*?)^```$", DOC.read_text(), re.S | re.M).group(1)


def local_config(directory: Path, upstream: int, tls: int, plain: int) -> str:
    """The example with its addresses and paths moved to ``directory`` and loopback ports."""
    block = nginx_example()
    for old, new in {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};",
        "listen 443 ssl;": f"listen 127.0.0.1:{tls} ssl;",
        "listen 192.168.50.10:80;": f"listen 127.0.0.1:{plain};",
        "/etc/ssl/provisioner/": f"{directory}/ssl/",
        "/var/log/nginx/": f"{directory}/logs/",
    }.items():
        assert old in block, old
        block = block.replace(old, new)
    return (
        f"pid {directory}/nginx.pid;\nerror_log {directory}/logs/error.log;\n"
        f"daemon off;\nevents {{}}\nhttp {{\n{block}}}\n"
    )


def self_signed_certificate(directory: Path) -> None:
    (directory / "ssl").mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=provisioner.example.org"]
        + ["-keyout", str(directory / "ssl" / "privkey.pem")]
        + ["-out", str(directory / "ssl" / "fullchain.pem")],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def nginx_dir(tmp_path: Path) -> Path:
    if not Path(NGINX).exists() or shutil.which("openssl") is None:
        pytest.skip("nginx or openssl is not installed (Debian: nginx-light, openssl)")
    directory = tmp_path / "nginx"
    (directory / "logs").mkdir(parents=True)
    self_signed_certificate(directory)
    return directory


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


@pytest.fixture
def nginx(nginx_dir: Path, tmp_path: Path) -> Iterator[dict[str, int]]:
    """The example running: ``upstream`` (for provisioner), ``tls`` and ``plain`` ports."""
    ports = {"upstream": free_port(), "tls": free_port(), "plain": free_port()}
    config = nginx_dir / "nginx.conf"
    config.write_text(local_config(nginx_dir, **ports))
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(nginx_dir), "-c", str(config)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(nginx_dir), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(ports["tls"])
        wait_for_port(ports["plain"])
        yield ports
    finally:
        process.terminate()
        process.wait(30)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET ``url`` (TLS unverified: the certificate is the test's own); status and text."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # No proxy from the environment: the test talks to loopback only.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_nginx_example_serves_operators_over_tls_and_machines_over_plain_http(nginx, tmp_path):
    env = sqlite_settings(tmp_path, API_TOKENS=API_TOKEN, TRUSTED_PROXIES=1)
    env |= {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with ServerProcess(env, tmp_path, port=nginx["upstream"]):
        tls = f"https://127.0.0.1:{nginx['tls']}"
        plain = f"http://127.0.0.1:{nginx['plain']}"
        with_token = {"Authorization": f"Bearer {API_TOKEN}"}

        assert get(f"{tls}/api/v1/nodes", with_token)[0] == 200
        assert get(f"{tls}/api/v1/nodes")[0] == 401

        status, script = get(f"{plain}/api/v1/boot?mac={MAC}")
        assert (status, script.splitlines()[0]) == (200, "#!ipxe")
        assert get(f"{plain}/api/v1/ipxe/boot.ipxe")[0] == 200
        assert get(f"{plain}/api/v1/report.sh")[0] == 200
        assert get(f"{plain}/api/v1/nodes/{MAC}/seed/{SEED_TOKEN}/user-data")[0] == 401
        for path in ("/api/v1/nodes", f"/api/v1/nodes/{MAC}", "/metrics", "/"):
            assert get(f"{plain}{path}", with_token)[0] == 403, path

    log = (tmp_path / "nginx" / "logs" / "provisioner-nodes.log").read_text()
    assert f"/api/v1/nodes/{MAC}/seed/***/user-data" in log, log
    assert SEED_TOKEN not in log

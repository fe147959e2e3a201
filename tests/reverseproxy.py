"""A real nginx in front of a test server, and a client on a network of its own.

``Nginx`` runs Debian's nginx (``nginx-light``) as a child process with a config, pid file,
logs and temp paths under the test's directory, proxying to one upstream the way the deploy
docs show. ``LanClient`` puts a client in a network namespace joined to this host by a
veth pair, so the proxy sees a non-loopback client address; it needs root (CAP_NET_ADMIN).
Both only ever talk to loopback or to the addresses of the pair they create.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

STARTUP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0

#: The start of an nginx config that runs as a test's child: in the foreground, one
#: process, with its pid file, logs and temp paths under ``{dir}``; the ``http`` block is
#: left open for the server blocks after it.
PREAMBLE = """\
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""

CONFIG = (
    PREAMBLE
    + """\
    server {{
{listen}
        location / {{
            proxy_pass {upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""
)


def nginx_binary() -> str | None:
    """The nginx executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Nginx:
    """nginx proxying ``upstream`` (``http://127.0.0.1:PORT``), listening on ``addresses``."""

    def __init__(self, directory: Path, upstream: str, addresses: tuple[str, ...] = ()) -> None:
        self.directory = Path(directory) / "nginx"
        self.upstream = upstream
        self.addresses = ("127.0.0.1", *addresses)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, address: str = "127.0.0.1") -> str:
        return f"http://{address}:{self.port}"

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = "\n".join(f"        listen {address}:{self.port};" for address in self.addresses)
        path = self.directory / "nginx.conf"
        path.write_text(CONFIG.format(dir=self.directory, listen=listen, upstream=self.upstream))
        return path

    def start(self) -> Self:
        """Start nginx and wait until it accepts connections."""
        binary = nginx_binary()
        assert binary is not None, "nginx is not installed"
        self.port = _free_port("127.0.0.1")
        config = self.write_config()
        with (self.directory / "stderr.log").open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.directory), "-c", str(config), "-e", "stderr"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen in time: {self.log_tail()}")

    def log_tail(self) -> str:
        logs = [self.directory / "stderr.log", self.directory / "error.log"]
        return "\n".join(path.read_text()[-2000:] for path in logs if path.exists())

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL after a while."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


class LanClient:
    """A network namespace with one veth pair to this host: a client at ``client_address``
    reaching this host's ``host_address`` (198.18.0.0/15, the benchmarking range, so no
    real network is touched)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.namespace = f"prov-lan-{tag}"
        self.host_link = f"pv{tag}h"
        self.client_link = f"pv{tag}c"
        subnet = int(tag[:2], 16)
        self.host_address = f"198.18.{subnet}.1"
        self.client_address = f"198.18.{subnet}.2"
        self.created = False

    @staticmethod
    def unavailable() -> str | None:
        """Why no namespace can be made here, or ``None``."""
        if shutil.which("ip") is None:
            return "the ip command (iproute2) is not installed (make e2e-deps)"
        if os.geteuid() != 0:
            return "making a network namespace needs root (CAP_NET_ADMIN)"
        return None

    def __enter__(self) -> Self:
        try:
            _ip("netns", "add", self.namespace)
            self.created = True
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.client_link)
            _ip("link", "set", self.client_link, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            inside = ("-n", self.namespace)
            _ip(*inside, "addr", "add", f"{self.client_address}/30", "dev", self.client_link)
            _ip(*inside, "link", "set", self.client_link, "up")
            _ip(*inside, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"cannot make a network namespace: {exc.stderr.strip()}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)
        if self.created:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)

    def curl(self, url: str, *args: str) -> tuple[int, str]:
        """``curl`` from inside the namespace: (HTTP status, body)."""
        command = ["ip", "netns", "exec", self.namespace, "curl", "-sS", "--noproxy", "*"]
        command += ["--max-time", "20", "-w", "\n%{http_code}", *args, url]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

"""Run the real ``provisioner serve`` in a subprocess and talk to it over HTTP.

End-to-end tests (events, stalled installs, several instances on one database, benchmarks)
share this harness. It only uses the standard library on the client side, so what a test
sees is what a machine or an operator's script would see::

    with start_server(tmp_path, database_url=database_url, WORKFLOWS_DIR=str(workflows)) as server:
        status, headers, body = server.get("/api/v1/nodes")

Nothing here asserts on the server's answers: a server that does not come up raises
``ServerStartError`` with the tail of its log, stopping reports the exit code for the test
to judge, and only a wait that times out (``wait_for_log``) fails the test.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import contextmanager
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any
from typing import NamedTuple
from typing import Self

from polling import WAIT_SECONDS
from polling import wait_for

ENV_PREFIX = "PROVISIONER_"
PROVISIONER_SCRIPT = Path(sys.executable).parent / "provisioner"
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0
LOG_TAIL_CHARS = 4000
#: What a server process logs once it listens.
SERVING = "provisioner: serving on"
#: Attempts at starting on a fresh port when another process grabbed the one we picked.
PORT_ATTEMPTS = 3

# Never send loopback requests through an http_proxy the environment may define.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``/health`` in time; the message has its log."""


class Response(NamedTuple):
    """An HTTP answer: unpack as ``status, headers, body``.

    ``body`` is the parsed JSON when the server said ``application/json``, else the raw bytes.
    """

    status: int
    headers: Message
    body: Any

    def __repr__(self) -> str:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body)
        return f"Response({self.status}, {self.content_type}, {body[:500]!r})"

    @property
    def content_type(self) -> str:
        """The media type without parameters, e.g. ``text/plain``."""
        return self.headers.get_content_type()

    @property
    def text(self) -> str:
        """The body as text (JSON bodies re-serialised)."""
        if isinstance(self.body, bytes):
            return self.body.decode("utf-8", errors="replace")
        return json.dumps(self.body)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process: a zombie, or one reaped while its ``/proc`` entry
    is read, is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def server_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """``os.environ`` without any ``PROVISIONER_*`` key, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def _unique_path(directory: Path, name: str, suffix: str) -> Path:
    path = directory / f"{name}{suffix}"
    number = 1
    while path.exists():
        number += 1
        path = directory / f"{name}-{number}{suffix}"
    return path


class ServerProcess:
    """``provisioner serve`` on a loopback port, as a context manager.

    ``env`` holds the ``PROVISIONER_*`` settings (they replace any in ``os.environ``);
    ``directory`` receives the log (``<name>.log``) and, unless ``env`` names a
    ``PROVISIONER_CONFIG``, an empty config file so a developer's ``instance/config.toml``
    cannot leak into the test. ``port=None`` picks a free one.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        directory: Path,
        *,
        name: str = "server",
        host: str = "127.0.0.1",
        port: int | None = None,
        threads: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self.host = host
        self.requested_port = port
        self.port = port or 0
        self.threads = threads
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.settings = dict(env)
        self.log_path = _unique_path(self.directory, name, ".log")
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else ``None``."""
        return self.process.poll() if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The command line ``start()`` runs."""
        command = [str(PROVISIONER_SCRIPT), "serve", "--host", self.host, "--port", str(self.port)]
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        return command + self.extra_args

    def start(self) -> Self:
        """Start the server and wait until ``GET /health`` answers 200."""
        if self.is_running():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        attempts_left = 1 if self.requested_port else PORT_ATTEMPTS
        while True:
            attempts_left -= 1
            self.port = self.requested_port or free_port(self.host)
            self._spawn()
            try:
                self._wait_until_healthy()
                return self
            except ServerStartError:
                lost_port_race = self.returncode is not None and _port_in_use(self.log_text())
                self._halt()
                if not (lost_port_race and attempts_left):
                    raise

    def _spawn(self) -> None:
        env = server_environment(self.settings)
        if not env.get(ENV_PREFIX + "CONFIG"):
            empty_config = self.directory / f"{self.name}-empty-config.toml"
            empty_config.touch()
            env[ENV_PREFIX + "CONFIG"] = str(empty_config)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C on pytest reaches the server through stop()
            )

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            if self.returncode is not None:
                self._fail(f"exited with code {self.returncode} before answering /health")
            try:
                status = self.get("/health", timeout=1.0).status
                if status == 200:
                    return
                last_problem = f"/health answered {status}"
            except OSError as exc:
                last_problem = f"/health: {exc}"
            time.sleep(0.05)
        self._fail(f"not healthy after {self.startup_timeout:g} s ({last_problem})")

    def _fail(self, problem: str) -> None:
        raise ServerStartError(
            f"provisioner serve on {self.url} {problem}; log {self.log_path}:\n{self.log_tail()}"
        )

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the server process, if it is running."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def _halt(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    # -- the log --------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, text: str, timeout: float = WAIT_SECONDS) -> str:
        """The log, once ``text`` is in it. The server writes a line before the answer of
        a client alone with it; while other clients are connected, up to 0.1 s later
        (``logs.BusyBatchingHandler``)."""

        def logged() -> str | None:
            log = self.log_text()
            return log if text in log else None

        try:
            return wait_for(logged, f"{text!r} in the log", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.log_tail()}") from None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]

    def wait_for_serving(self, count: int, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s until ``count`` processes (``serve --workers``) have
        logged that they serve; return how many have."""
        deadline = time.monotonic() + timeout
        while self.log_text().count(SERVING) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.log_text().count(SERVING)

    # -- HTTP -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> Response:
        """Send one request; ``body`` is sent as JSON unless it is already ``bytes``.

        HTTP error statuses are returned, not raised; a refused connection or a timeout
        raises ``OSError`` (``urllib.error.URLError`` or ``TimeoutError``).
        """
        all_headers = {"Accept": "application/json, text/plain"} | dict(headers or {})
        data = body
        if body is not None and not isinstance(body, bytes):
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=all_headers
        )
        try:
            with _OPENER.open(request, timeout=timeout) as answer:
                return _response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            with error:
                return _response(error.code, error.headers, error.read())

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Response:
        return self.request("DELETE", path, **kwargs)

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Response:
        return self.request("POST", path, body, **kwargs)

    def patch_json(self, path: str, body: Any, **kwargs: Any) -> Response:
        return self.request("PATCH", path, body, **kwargs)


def _response(status: int, headers: Message, raw: bytes) -> Response:
    body: Any = raw
    if raw and headers.get_content_type() == "application/json":
        try:
            body = json.loads(raw)
        except ValueError:
            pass
    return Response(status, headers, body)


def _port_in_use(log: str) -> bool:
    return "Address already in use" in log or "[Errno 98]" in log


def sqlite_settings(directory: Path, **settings: Any) -> dict[str, str]:
    """``PROVISIONER_*`` variables for a server on ``<directory>/provisioner.db``.

    Keyword arguments are setting names without the prefix (``WORKFLOWS_DIR=...``,
    ``INSTALL_TIMEOUT_MINUTES=0.05``); a ``DATABASE_URL`` among them replaces the default.
    """
    database = Path(directory).resolve() / "provisioner.db"
    env = {ENV_PREFIX + "DATABASE_URL": f"sqlite:///{database}"}
    env |= {ENV_PREFIX + key: str(value) for key, value in settings.items()}
    return env


@contextmanager
def start_server(
    directory: Path,
    *,
    name: str = "server",
    threads: int | None = None,
    database_url: str | None = None,
    **settings: Any,
) -> Iterator[ServerProcess]:
    """A running server on ``database_url``, by default a SQLite file in ``directory``.

    ``directory`` (typically ``tmp_path``) receives the log either way; tests that run on
    both backends pass the ``database_url`` fixture.
    """
    if database_url is not None:
        settings["DATABASE_URL"] = database_url
    env = sqlite_settings(directory, **settings)
    with ServerProcess(env, directory, name=name, threads=threads) as server:
        yield server


def finished_sweeps(server: ServerProcess) -> int:
    """Sweeps the server ran to the end, from the sweep duration histogram in /metrics."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("provisioner_sweep_duration_seconds_count"):
            return int(float(line.split()[-1]))
    return 0

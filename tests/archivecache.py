"""A caching HTTP proxy to the Debian archive, for the opt-in full install (make e2e-full).

d-i and apt in the guest send absolute-URI requests (``GET http://deb.debian.org/...``) to
their ``http/proxy``; this proxy answers them from a cache directory, fetching a miss from
the archive. It forwards only to the Debian archive's hosts (the one network a test may reach
beyond loopback: a package registry) and to the loopback servers it is told of (d-i fetches
its preseed files through the same proxy once ``mirror/http/proxy`` is set, and the guest's
reports may go through it); any other host gets 403.

Why not apt-cacher-ng, which the issue names: Debian 12's apt-cacher-ng 3.7.4 does not start
in this project's sandbox ("Error resolving address for binding: Success" for any
``BindAddress``, including 127.0.0.1; its libevent resolver fails where the C library's
works). The cache directory outlives the test (``PROVISIONER_ARCHIVE_CACHE``, default
``~/.cache/provisioner-e2e/debian-archive``) so a second run fetches only changed indexes.
"""

import hashlib
import http.client
import http.server
import os
import shutil
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from loopbackhttp import LoopbackHTTPServer
from loopbackhttp import forward

ARCHIVE_HOSTS = frozenset({"deb.debian.org", "security.debian.org"})
#: Index files (dists/) change; a cached copy older than this is fetched again.
INDEX_MAX_AGE_SECONDS = 6 * 60 * 60


def default_cache_dir() -> Path:
    configured = os.environ.get("PROVISIONER_ARCHIVE_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "provisioner-e2e" / "debian-archive"


class ArchiveCache(LoopbackHTTPServer):
    """The proxy on a free loopback port; counts hits and misses."""

    def __init__(self, cache_dir: Path | None = None, local: dict[str, int] | None = None) -> None:
        """``local`` maps a host name the guest uses to a loopback port to pass through to,
        uncached."""
        self.cache_dir = cache_dir or default_cache_dir()
        self.local = dict(local or {})
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.refused: list[str] = []
        self.failures: list[tuple[str, int]] = []  # (URL, status) the archive did not give
        self._lock = threading.Lock()
        super().__init__(type("Handler", (_CacheHandler,), {"cache": self}))

    def path_for(self, url: str) -> Path:
        parsed = urllib.parse.urlsplit(url)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        name = Path(parsed.path).name or "index"
        return self.cache_dir / parsed.hostname / f"{digest}-{name}"

    def fresh(self, path: Path, url: str) -> bool:
        if not path.exists():
            return False
        if "/pool/" in url or "/by-hash/" in url:
            return True  # pool files and by-hash indexes never change under one name
        return time.time() - path.stat().st_mtime < INDEX_MAX_AGE_SECONDS

    def fetch(self, url: str, path: Path) -> int:
        """Fetch ``url`` into ``path``; the HTTP status (only a 200 is stored)."""
        parsed = urllib.parse.urlsplit(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
        try:
            connection.request(
                "GET", parsed.path or "/", headers={"User-Agent": "provisioner-e2e"}
            )
            response = connection.getresponse()
            if response.status != 200:
                response.read()
                return response.status
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + f".{threading.get_ident()}.part")
            with partial.open("wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            partial.replace(path)
            return 200
        finally:
            connection.close()

    def count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1


class _CacheHandler(http.server.BaseHTTPRequestHandler):
    cache: ArchiveCache
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        url = self.path
        host = urllib.parse.urlsplit(url).hostname
        if host in self.cache.local:
            self._pass_through(self.cache.local[host])
            return
        if self.command == "POST" or host not in ARCHIVE_HOSTS:
            self.cache.refused.append(url)
            self._status_only(403)
            return
        path = self.cache.path_for(url)
        hit = self.cache.fresh(path, url)
        self.cache.count(hit)
        if not hit:
            try:
                status = self.cache.fetch(url, path)
            except OSError:
                status = 502
            if status != 200:
                self.cache.failures.append((url, status))
                self._status_only(status)
                return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if send_body:
            with path.open("rb") as body:
                shutil.copyfileobj(body, self.wfile, 1 << 20)

    def _pass_through(self, port: int) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        target = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        forward(self, port, target, timeout=120)

    def _status_only(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass

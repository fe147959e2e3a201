"""``provisioner assets fetch/list/verify`` and ``workflows check`` against a loopback
mirror that speaks Range and If-Range and can drop a download half-way."""

import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

KERNEL = os.urandom(300_000)
INITRD = os.urandom(1_000_003)
ETAG = '"v1"'


class Mirror:
    """Serves ``files`` on loopback; ``cut[path]`` bytes ends that path's next body early."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                mirror.requests.append((self.path, self.headers.get("Range")))
                data = mirror.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if wanted and self.headers.get("If-Range") == ETAG:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", ETAG)
                self.end_headers()
                if self.path in mirror.cut:
                    body = body[: mirror.cut.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mirror]:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    served = Mirror(
        {
            "/d/linux": KERNEL,
            "/d/initrd.gz": INITRD,
            "/d/SHA256SUMS": f"{sha(KERNEL)}  linux\n{sha(INITRD)} *initrd.gz\n".encode(),
        }
    )
    yield served
    served.close()


@pytest.fixture
def cli_app(build_app, workflows_dir: Path, tmp_path: Path, mirror: Mirror) -> Flask:
    (workflows_dir / "deb.yaml").write_text(
        "id: deb\nname: Deb\nkernel_path: deb/linux\ninitrd_path: ${assets}/deb/initrd.gz\n"
        "assets:\n"
        f"  - path: deb/linux\n    url: {mirror.url}/d/linux\n"
        f"    checksum: sha256:{sha(KERNEL)}\n"
        f"  - path: deb/initrd.gz\n    url: {mirror.url}/d/initrd.gz\n"
        f"    checksum: {mirror.url}/d/SHA256SUMS\n"
    )
    return build_app(ASSETS_DIR=str(tmp_path / "assets"))


def run(app: Flask, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def assets_dir(app: Flask) -> Path:
    return Path(app.config["ASSETS_DIR"])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_fetch_then_verify_then_up_to_date(cli_app: Flask) -> None:
    result = run(cli_app, "assets", "fetch", "deb")
    assert result.exit_code == 0, result.output
    assert f"deb/linux: downloaded, 300000 bytes, sha256:{sha(KERNEL)}" in result.output
    assert (assets_dir(cli_app) / "deb" / "linux").read_bytes() == KERNEL
    assert (assets_dir(cli_app) / "deb" / "initrd.gz").read_bytes() == INITRD
    assert run(cli_app, "assets", "verify").exit_code == 0
    assert "deb/linux: up to date" in run(cli_app, "assets", "fetch", "deb").output
    listing = run(cli_app, "assets", "list").output
    assert "deb/initrd.gz" in listing and "present, 1000003 bytes" in listing
    result = run(cli_app, "workflows", "check")
    assert "deb.yaml: ok" in result.output, result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_interrupted_download_resumes(cli_app: Flask, mirror: Mirror) -> None:
    mirror.cut["/d/initrd.gz"] = 400_000
    result = run(cli_app, "assets", "fetch", "deb")
    assert result.exit_code == 1
    assert "connection closed after" in result.output and "run again to resume" in result.output
    part = assets_dir(cli_app) / "deb" / ".initrd.gz.part"
    assert part.stat().st_size == 400_000
    assert run(cli_app, "assets", "list").output.count("partial, 400000 bytes so far") == 1
    result = run(cli_app, "assets", "fetch", "deb")
    assert result.exit_code == 0, result.output
    assert "deb/initrd.gz: resumed, 1000003 bytes" in result.output
    assert ("/d/initrd.gz", "bytes=400000-") in mirror.requests
    assert (assets_dir(cli_app) / "deb" / "initrd.gz").read_bytes() == INITRD
    assert not part.exists()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_mismatch_is_refused_and_deleted(cli_app: Flask, mirror: Mirror) -> None:
    mirror.files["/d/linux"] = b"tampered" + KERNEL[8:]
    result = run(cli_app, "assets", "fetch", "deb")
    assert result.exit_code == 1
    assert "deb/linux: FAILED: deb/linux: checksum mismatch" in result.output
    assert "deleted the download (.linux.part)" in result.output
    directory = assets_dir(cli_app) / "deb"
    assert not (directory / "linux").exists() and not (directory / ".linux.part").exists()
    assert (directory / "initrd.gz").read_bytes() == INITRD  # the other asset still came


@pytest.mark.parametrize("backend", ["sqlite"])
def test_workflows_check_and_verify_find_a_changed_file(cli_app: Flask) -> None:
    assert run(cli_app, "assets", "fetch", "deb").exit_code == 0
    (assets_dir(cli_app) / "deb" / "initrd.gz").write_bytes(b"corrupted")
    result = run(cli_app, "workflows", "check")
    assert result.exit_code == 1
    assert "deb.yaml: assets: deb/initrd.gz: checksum mismatch" in result.output
    result = run(cli_app, "assets", "verify", "deb")
    assert result.exit_code == 1 and "deb/initrd.gz: checksum mismatch" in result.output
    offline = run(cli_app, "assets", "verify", "--offline")
    assert offline.exit_code == 0, offline.output  # the SHA256SUMS file is not fetched
    assert "checksum not checked (--offline)" in offline.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_missing_assets_fail_the_check(cli_app: Flask) -> None:
    result = run(cli_app, "workflows", "check")
    assert result.exit_code == 1
    assert "kernel_path: deb/linux: no such file in ASSETS_DIR" in result.output
    result = run(cli_app, "assets", "verify")
    assert result.exit_code == 1 and "deb/linux: missing in ASSETS_DIR" in result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_path_leaving_assets_dir_is_refused(build_app, workflows_dir: Path, tmp_path: Path):
    (workflows_dir / "bad.yaml").write_text(
        "id: bad\nname: Bad\nkernel_path: http://x/k\ninitrd_path: http://x/i\n"
        "assets:\n  - path: deb/../../escape\n    url: http://127.0.0.1:9/x\n"
        f"    checksum: sha256:{'0' * 64}\n"
    )
    app = build_app(ASSETS_DIR=str(tmp_path / "assets"))
    result = run(app, "assets", "fetch", "bad")
    assert result.exit_code == 1
    assert "not a path below ASSETS_DIR" in result.output
    assert not (tmp_path / "escape").exists()


def test_sums_lookup_prefers_the_line_that_ends_the_url() -> None:
    from provisioner.assets.fetch import sums_lookup

    sums = (
        f"{'a' * 64}  ./netboot/gtk/debian-installer/amd64/linux\n"
        f"{'b' * 64}  ./netboot/debian-installer/amd64/linux\n"
        f"{'c' * 64}  ./cdrom/vmlinuz\n"
    )
    url = "/debian/dists/bookworm/main/installer-amd64/current/images/netboot/"
    url += "debian-installer/amd64/linux"
    assert sums_lookup(sums, url, "debian-12/linux") == "b" * 64
    assert sums_lookup(sums, "/elsewhere/vmlinuz", "x/vmlinuz") == "c" * 64
    assert sums_lookup(sums, "/elsewhere/linux", "x/linux") is None  # two lines: ambiguous

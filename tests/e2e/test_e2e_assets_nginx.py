"""``ASSETS_ACCEL_REDIRECT``: behind nginx, provisioner checks the path and nginx sends the
file from an ``internal`` location (real nginx, real ``provisioner serve``, curl)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from reverseproxy import PREAMBLE
from reverseproxy import Nginx
from reverseproxy import nginx_binary
from serverproc import start_server

pytestmark = pytest.mark.e2e

CONFIG = (
    PREAMBLE
    + """\
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
        location /internal-assets/ {{
            internal;
            alias {assets}/;
        }}
    }}
}}
"""
)


class AssetNginx(Nginx):
    """The test nginx, with the internal location that serves ASSETS_DIR."""

    def __init__(self, directory: Path, upstream: str, assets: Path) -> None:
        super().__init__(directory, upstream)
        self.assets = assets

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "nginx.conf"
        path.write_text(
            CONFIG.format(
                dir=self.directory, port=self.port, upstream=self.upstream, assets=self.assets
            )
        )
        return path


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    command = ["curl", "--silent", "--noproxy", "*", "--max-time", "30", *args]
    return subprocess.run(command, capture_output=True, check=False, timeout=60)


def test_nginx_sends_what_provisioner_allows(tmp_path: Path) -> None:
    if nginx_binary() is None or shutil.which("curl") is None:
        pytest.skip("nginx or curl is not installed (Debian: nginx-light, curl)")
    assets = tmp_path / "assets"
    (assets / "os").mkdir(parents=True)
    data = os.urandom(200_000)
    (assets / "os" / "initrd.img").write_bytes(data)
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", assets / "escape")
    settings = {"ASSETS_DIR": str(assets), "ASSETS_ACCEL_REDIRECT": "/internal-assets/"}
    with (
        start_server(tmp_path, **settings) as server,
        AssetNginx(tmp_path, server.url, assets) as nginx,
    ):
        base = nginx.url() + "/assets"
        result = curl("-D", "-", "-r", "10-19", f"{base}/os/initrd.img")
        head, _, body = result.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 206"), head
        assert body == data[10:20]
        assert b"X-Accel-Redirect" not in head  # nginx consumes it
        whole = curl(f"{base}/os/initrd.img").stdout
        assert whole == data
        for path in ("escape", "os/", "..%2fsecret"):
            code = curl("-o", "/dev/null", "-w", "%{http_code}", f"{base}/{path}").stdout
            assert code == b"404", path
        # nginx's own internal location is not reachable from outside
        internal = f"{nginx.url()}/internal-assets/os/initrd.img"
        direct = curl("-o", "/dev/null", "-w", "%{http_code}", internal)
        assert direct.stdout == b"404"

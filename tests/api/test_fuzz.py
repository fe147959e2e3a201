"""Fuzzing: generated reports against the report endpoint, and schemathesis against the API.

A hypothesis property: whatever body arrives at ``POST /api/v1/report``, the answer is never a
5xx and the database changes only when the answer is 200. Then schemathesis reads the served
OpenAPI document and sends a bounded, seeded set of generated requests (with an operator
token) to every operation: no 5xx, and every response matches its documented schema.
"""

import json
import string
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import text

from provisioner import create_app
from provisioner.domain.events import REPORTED_TYPES
from provisioner.domain.reports import LEGACY_STATUS
from provisioner.extensions import db

TABLES = ("nodes", "node_tags", "node_state_logs", "node_events")
#: Known nodes, one per state a report can act on, and the MAC of no node.
NODE_STATES = {
    "52:54:00:f2:00:01": "installing",
    "52:54:00:f2:00:02": "pending",
    "52:54:00:f2:00:03": "installed",
    "52:54:00:f2:00:04": "active",
    "52:54:00:f2:00:05": "install_failed",
}
UNKNOWN_MAC = "52:54:00:f2:00:99"
REPORT_EXAMPLES = 200
API_TOKEN = "fuzz-operator-token-0123456789abcdef"
SCHEMATHESIS_EXAMPLES = 25
SEED = 20260101


# -- the report property ------------------------------------------------------------------------

#: Strings that have broken parsers, databases or scripts before.
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "web\n",
    "\r\n",
    "é",
    "💥",
    "${report_token}",
    "../../etc/passwd",
    "'; DROP TABLE nodes; --",
    "x" * 4097,
    "1e400",
    "NaN",
]

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80), max_size=10),
    st.sampled_from(NASTY_STRINGS),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def mac_forms(mac: str) -> list[str]:
    """The forms in which a client may write ``mac``."""
    bare = mac.replace(":", "")
    return [mac, mac.upper(), mac.replace(":", "-"), bare, bare.upper()]


mac_values = st.one_of(
    st.sampled_from([form for mac in NODE_STATES for form in mac_forms(mac)]),
    st.sampled_from(mac_forms(UNKNOWN_MAC)),
    st.text(alphabet=string.hexdigits + ":-.", max_size=20),
    json_values,
)
deep_metadata = st.integers(min_value=1, max_value=8).map(
    lambda depth: json.loads('{"a":' * depth + "1" + "}" * depth)
)
hostnames = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,2}\Z")


#: Text a free-text field accepts by its schema, hostile or not (NUL is refused anywhere).
free_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from([text for text in NASTY_STRINGS if "\x00" not in text and len(text) < 4096]),
)
known_macs = st.sampled_from([form for mac in NODE_STATES for form in mac_forms(mac)])

#: A value each field accepts (free text may still be hostile: NUL, surrogates, newlines).
VALID_FIELDS = {
    "event": st.sampled_from([str(kind) for kind in REPORTED_TYPES]),
    "status": st.sampled_from(["success", "failed", "in_progress"]),
    "message": free_text,
    "progress": st.integers(0, 100),
    "event_metadata": st.dictionaries(free_text, json_values, max_size=5),
    "event_id": st.text(min_size=1, max_size=20) | free_text.filter(bool),
    "installation_status": st.sampled_from(list(LEGACY_STATUS)),
    "installation_progress": st.integers(0, 100),
    "installation_error": free_text,
    "hostname": hostnames,
    "ip_address": st.ip_addresses().map(str),
    "vendor": free_text,
    "model": free_text,
    "serial_number": free_text,
    "system_uuid": st.uuids().map(str),
}
#: Values some field refuses, besides any JSON value at all.
INVALID_FIELDS = {
    "mac_address": [mac_values],
    "event": [texts],
    "status": [texts],
    "message": [st.just("m" * 4097)],
    "progress": [st.integers(), st.floats()],
    "event_metadata": [deep_metadata, st.just({"blob": "x" * (16 * 1024)})],
    "event_id": [st.just(""), st.just("e" * 129)],
    "installation_status": [texts],
    "installation_progress": [st.integers()],
    "installation_error": [st.just("e" * 4097)],
    "hostname": [texts],
    "ip_address": [texts],
    "vendor": [st.just("v" * 256)],
    "system_uuid": [st.just("u" * 37)],
}


def mixed(field: str) -> st.SearchStrategy:
    """A valid value, null, an invalid one, or any JSON at all."""
    valid = VALID_FIELDS.get(field, known_macs)
    return st.one_of(valid, st.none(), *INVALID_FIELDS.get(field, []), json_values)


REPORT_FIELDS_ALL = {"mac_address", *VALID_FIELDS}
valid_objects = st.fixed_dictionaries({"mac_address": known_macs}, optional=VALID_FIELDS)
mixed_objects = st.fixed_dictionaries(
    {}, optional={field: mixed(field) for field in ("mac_address", *VALID_FIELDS)}
)
#: Keys a script might add that the schema ignores (EXCLUDE), with harmless values.
harmless_extras = st.dictionaries(
    st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).filter(
        lambda key: key not in REPORT_FIELDS_ALL
    ),
    st.integers(0, 1000) | st.text(alphabet=string.ascii_letters, max_size=8),
    max_size=2,
)
report_objects = st.one_of(
    # Twice: a body the schema accepts is where storing a hostile string can still fail.
    st.builds(lambda fields, extra: extra | fields, valid_objects, harmless_extras),
    st.builds(lambda fields, extra: extra | fields, valid_objects, harmless_extras),
    st.builds(
        lambda fields, extra: extra | fields,
        mixed_objects,
        st.dictionaries(texts, json_values, max_size=3),
    ),
)


def encode(value: Any) -> bytes:
    """JSON as a client might send it: NaN/Infinity literals and ``\\ud800`` escapes included."""
    return json.dumps(value, allow_nan=True).encode()


report_requests = st.one_of(
    st.tuples(report_objects.map(encode), st.just("application/json")),
    st.tuples(report_objects.map(encode), st.sampled_from(["text/plain", "application/xml", ""])),
    st.tuples(json_values.map(encode), st.just("application/json")),
    st.tuples(st.binary(max_size=200), st.just("application/json")),
    st.tuples(
        report_objects.map(lambda body: encode(body)[:-1] + b', "mac_address": "x"}'),
        st.just("application/json"),
    ),
)


def database_state(application: Flask) -> dict[str, Any]:
    """Row counts of every table and every column of every node."""
    with application.app_context():
        counts = {
            table: db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }
        nodes = [tuple(row) for row in db.session.execute(text("SELECT * FROM nodes ORDER BY id"))]
    return {"counts": counts, "nodes": nodes}


def seed_nodes(application: Flask) -> None:
    """One node in each state of ``NODE_STATES``."""
    client = application.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {API_TOKEN}"
    for mac, state in NODE_STATES.items():
        created = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": "test-os"})
        assert created.status_code == 201, created.json
        moved = client.patch(f"/api/v1/nodes/{mac}/state", json={"state": state, "force": True})
        assert moved.status_code == 200, moved.json


def test_arbitrary_report_bodies_never_5xx_and_write_only_on_200(app, clock):
    """The property, over one app whose nodes move as the accepted reports say."""
    seed_nodes(app)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash is a 500 to judge, as in production
    client = app.test_client()
    statuses: set[int] = set()

    @settings(
        max_examples=REPORT_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=report_requests)
    def check(request: tuple[bytes, str]) -> None:
        data, content_type = request
        before = database_state(app)
        clock.advance(seconds=1)

        headers = {"Content-Type": content_type} if content_type else {}
        response = client.post("/api/v1/report", data=data, headers=headers)

        statuses.add(response.status_code)
        assert response.status_code < 500, (data[:300], response.get_data()[:500])
        assert response.is_json
        if response.status_code != 200:
            assert database_state(app) == before, (data[:300], response.status_code)

    check()
    assert 200 in statuses and 422 in statuses, statuses


# -- schemathesis against the served OpenAPI document -------------------------------------------


def served_openapi_document_schema() -> schemathesis.schemas.BaseSchema:
    """The OpenAPI document as the app serves it, loaded once at collection.

    Every operation's test then calls its own app (fresh database, operator token required);
    the document does not depend on the database, so an in-memory one serves it here.
    (``schemathesis.pytest.from_fixture`` would be the natural way to load it from a fixture,
    but it fails under pytest 9.2, whose ``Function`` no longer has ``_nodeid``.)
    """
    application = create_app({"TESTING": True, "DATABASE_URL": "sqlite://", "REPORT_AUTH": "open"})
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": SCHEMATHESIS_EXAMPLES, "deterministic": True},
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application, config=config)


schema = served_openapi_document_schema()


@pytest.fixture
def api_app(build_app: Callable[..., Flask]) -> Flask:
    """An app that requires the operator token, with one node in each state."""
    application = build_app(API_TOKENS=[API_TOKEN], REPORT_AUTH="open")
    seed_nodes(application)
    application.config["PROPAGATE_EXCEPTIONS"] = False  # a crash is a 500 to report
    return application


@schema.parametrize()
@settings(
    max_examples=SCHEMATHESIS_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case, api_app):
    """No generated request gets a 5xx; every response matches its documented schema."""
    case.call_and_validate(
        app=api_app,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        checks=[not_a_server_error, response_schema_conformance],
    )

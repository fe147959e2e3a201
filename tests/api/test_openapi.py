"""The generated OpenAPI document and the interactive docs page."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import databases
import pytest

from provisioner import create_app
from provisioner.serve import close_database

NODE_PATHS = [
    "/api/v1/nodes",
    "/api/v1/nodes/{ref}",
    "/api/v1/nodes/{ref}/state",
    "/api/v1/nodes/{ref}/history",
    "/api/v1/nodes/{ref}/tags",
    "/api/v1/nodes/{ref}/tags/{tag}",
]
BOOT_PATHS = ["/api/v1/boot", "/api/v1/ipxe/boot.ipxe"]
WORKFLOW_PATHS = ["/api/v1/workflows", "/api/v1/workflows/{workflow_id}"]
SCHEMAS = [
    "Node",
    "NodeCreate",
    "NodeUpdate",
    "NodeEnvelope",
    "NodeListEnvelope",
    "StateChange",
    "StateLog",
    "StateLogListEnvelope",
    "Tags",
    "WorkflowOut",
    "WorkflowEnvelope",
    "WorkflowListEnvelope",
]


@pytest.fixture(scope="module")
def served_document(tmp_path_factory: pytest.TempPathFactory, sqlite_template) -> str:
    """The OpenAPI document as the server serves it, fetched once for this module: it depends
    on neither the database nor any setting these tests change."""
    database = tmp_path_factory.mktemp("openapi") / "provisioner.db"
    databases.copy_sqlite(sqlite_template[0], database)
    with pytest.MonkeyPatch.context() as env:
        for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
            env.delenv(name)
        app = create_app(
            {"TESTING": True, "DATABASE_URL": f"sqlite:///{database}", "REPORT_AUTH": "open"}
        )
    try:
        response = app.test_client().get("/api/v1/openapi.json")
    finally:
        close_database(app)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_data(as_text=True)


@pytest.fixture
def spec(served_document: str) -> dict:
    """A fresh copy of the document for each test."""
    return json.loads(served_document)


def test_document_is_openapi_3(spec):
    """The document declares OpenAPI 3 and has a title and version."""
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"]
    assert spec["info"]["version"]


@pytest.mark.parametrize("path", NODE_PATHS + BOOT_PATHS + WORKFLOW_PATHS)
def test_every_endpoint_is_documented(spec, path):
    """Node, boot and workflow paths are all in the document."""
    assert path in spec["paths"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/nodes", {"get", "post"}),
        ("/api/v1/nodes/{ref}", {"get", "patch", "delete"}),
        ("/api/v1/nodes/{ref}/state", {"patch"}),
        ("/api/v1/nodes/{ref}/history", {"get"}),
        ("/api/v1/nodes/{ref}/tags", {"post"}),
        ("/api/v1/nodes/{ref}/tags/{tag}", {"delete"}),
        ("/api/v1/boot", {"get"}),
        ("/api/v1/workflows", {"get"}),
    ],
)
def test_methods_are_documented(spec, path, methods):
    """Each path lists the HTTP methods the API answers."""
    assert methods <= set(spec["paths"][path])


@pytest.mark.parametrize("name", SCHEMAS)
def test_component_schemas_are_present(spec, name):
    """The marshmallow schemas appear as named components."""
    assert name in spec["components"]["schemas"]


def request_schema(spec: dict, path: str, method: str) -> str:
    """The component a request body refers to."""
    body = spec["paths"][path][method]["requestBody"]
    return body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_request_bodies_use_the_schemas(spec):
    """Create, update, state change and tags bodies point at their schemas."""
    assert request_schema(spec, "/api/v1/nodes", "post") == "NodeCreate"
    assert request_schema(spec, "/api/v1/nodes/{ref}", "patch") == "NodeUpdate"
    assert request_schema(spec, "/api/v1/nodes/{ref}/state", "patch") == "StateChange"
    assert request_schema(spec, "/api/v1/nodes/{ref}/tags", "post") == "Tags"


def test_schemas_carry_their_fields(spec):
    """The Node schema lists the data model's fields; StateChange requires ``state``."""
    schemas = spec["components"]["schemas"]
    node_fields = set(schemas["Node"]["properties"])
    assert {
        "id",
        "mac_address",
        "state",
        "workflow_id",
        "install_attempts",
        "last_install_error",
        "state_changed_at",
        "last_seen_at",
        "tags",
    } <= node_fields
    assert "state" in schemas["StateChange"]["required"]
    assert "mac_address" in schemas["NodeCreate"]["required"]
    assert {"state", "comment", "force"} <= set(schemas["StateChange"]["properties"])


def test_boot_endpoint_documents_its_query_and_plain_text(spec):
    """``/api/v1/boot`` documents a required ``mac`` and a ``text/plain`` answer."""
    operation = spec["paths"]["/api/v1/boot"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["mac"]["required"] is True
    assert parameters["mac"]["in"] == "query"
    assert "text/plain" in operation["responses"]["200"]["content"]


def test_node_list_documents_its_filters(spec):
    """``GET /api/v1/nodes`` documents state, tag, limit and offset."""
    operation = spec["paths"]["/api/v1/nodes"]["get"]
    names = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    assert {"state", "tag", "limit", "offset"} <= names


@pytest.mark.parametrize("backend", ["sqlite"])  # the page reads no table
def test_docs_page_is_html(client):
    """``/api/docs`` serves the interactive documentation."""
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "openapi.json" in response.get_data(as_text=True)


@pytest.mark.parametrize("backend", ["sqlite"])  # the document reads no table
def test_the_document_is_written_once_when_first_read_by_several_requests(app):
    """The document is written on first read (not in create_app): requests racing to be
    first all get the same document, each operation and tag in it once."""
    with ThreadPoolExecutor(4) as pool:
        bodies = list(
            pool.map(lambda _: app.test_client().get("/api/v1/openapi.json").data, range(4))
        )
    assert len(set(bodies)) == 1
    document = json.loads(bodies[0])
    tags = [tag["name"] for tag in document["tags"]]
    assert len(tags) == len(set(tags))
    assert set(document["paths"]) >= set(NODE_PATHS + BOOT_PATHS + WORKFLOW_PATHS)

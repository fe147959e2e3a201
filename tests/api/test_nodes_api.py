"""The operator node API: list, create, show, update, state changes, history, tags, delete."""

import pytest
from sqlalchemy import func
from sqlalchemy import select

from provisioner.domain.lifecycle import TRANSITIONS
from provisioner.domain.lifecycle import State
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.models import NodeTag
from provisioner.store.transactions import write_transaction
from provisioner.version import VERSION

MAC = "52:54:00:12:34:56"


def create(client, mac: str = MAC, **fields) -> dict:
    """Create a node through the API and return its data."""
    response = client.post("/api/v1/nodes", json={"mac_address": mac, **fields})
    assert response.status_code == 201, response.json
    return response.json["data"]


def set_state(client, ref: str, state: str, **body):
    """``PATCH /api/v1/nodes/<ref>/state``."""
    return client.patch(f"/api/v1/nodes/{ref}/state", json={"state": state, **body})


def assert_error(response, status: int, field: str | None = None) -> dict:
    """Check a JSON error body with ``status``, naming ``field`` if given."""
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.json
    assert body["success"] is False
    assert body["message"]
    if field is not None:
        assert field in body["errors"], body
    return body


# -- list ---------------------------------------------------------------------------------


@pytest.fixture
def three_nodes(client, clock) -> list[dict]:
    """Three nodes created a minute apart; the second pending and tagged ``rack1``."""
    nodes = []
    for index, tags in enumerate((["gpu"], ["rack1", "gpu"], ["rack1"])):
        nodes.append(create(client, f"52:54:00:00:00:0{index + 1}", tags=tags))
        clock.advance(minutes=1)
    assert set_state(client, nodes[1]["id"], "pending").status_code == 200
    return nodes


def listing(client, **query) -> dict:
    """``GET /api/v1/nodes`` with ``query``; check the envelope and return the body."""
    response = client.get("/api/v1/nodes", query_string=query)
    assert response.status_code == 200
    assert set(response.json) == {"success", "data", "total"}
    assert response.json["success"] is True
    return response.json


def test_list_returns_every_node_in_creation_order(client, three_nodes):
    """Without filters all nodes come back, oldest first, with the total."""
    body = listing(client)
    assert [n["id"] for n in body["data"]] == [n["id"] for n in three_nodes]
    assert body["total"] == 3


def test_list_filters_by_state(client, three_nodes):
    """``state=`` keeps only nodes in that state."""
    body = listing(client, state="pending")
    assert [n["id"] for n in body["data"]] == [three_nodes[1]["id"]]
    assert body["total"] == 1
    assert listing(client, state="active") == {"success": True, "data": [], "total": 0}


def test_list_filters_by_tag(client, three_nodes):
    """``tag=`` keeps only nodes carrying that tag."""
    body = listing(client, tag="rack1")
    assert [n["id"] for n in body["data"]] == [three_nodes[1]["id"], three_nodes[2]["id"]]
    assert body["total"] == 2


def test_list_combines_filters(client, three_nodes):
    """State and tag filters apply together."""
    body = listing(client, state="discovered", tag="gpu")
    assert [n["id"] for n in body["data"]] == [three_nodes[0]["id"]]


def test_list_pages_with_limit_and_offset(client, three_nodes):
    """``limit``/``offset`` cut the page; ``total`` still counts every match."""
    body = listing(client, limit=1, offset=1)
    assert [n["id"] for n in body["data"]] == [three_nodes[1]["id"]]
    assert body["total"] == 3
    assert listing(client, limit=2, offset=2)["data"][0]["id"] == three_nodes[2]["id"]
    assert listing(client, offset=3)["data"] == []


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "sleeping"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "lots"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"tag": "Not A Tag"}, "tag"),
    ],
)
def test_list_rejects_bad_filters(client, query, field):
    """A bad query parameter is a 422 naming it."""
    assert_error(client.get("/api/v1/nodes", query_string=query), 422, field)


# -- create -------------------------------------------------------------------------------


def test_create_returns_201_with_a_discovered_node(client, clock):
    """A new node starts discovered with a normalised MAC and the envelope around it."""
    response = client.post(
        "/api/v1/nodes",
        json={"mac_address": "52-54-00-12-34-56", "hostname": "web1", "tags": ["rack1"]},
    )
    assert response.status_code == 201
    assert set(response.json) == {"success", "data", "message"}
    node = response.json["data"]
    assert node["mac_address"] == MAC
    assert node["state"] == "discovered"
    assert node["hostname"] == "web1"
    assert node["tags"] == ["rack1"]
    assert node["install_attempts"] == 0
    assert node["created_at"] == node["state_changed_at"] == clock().isoformat()


def test_create_with_workflow(client):
    """A node may be created with an existing workflow."""
    assert create(client, workflow_id="test-os")["workflow_id"] == "test-os"


def test_create_with_unknown_workflow_is_422(client):
    """Creating a node with a workflow that has no file names ``workflow_id``."""
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, "workflow_id": "nope"})
    assert_error(response, 422, "workflow_id")
    assert listing(client)["total"] == 0


@pytest.mark.parametrize("form", [MAC, "52-54-00-12-34-56", "525400123456", MAC.upper()])
def test_duplicate_mac_is_409(client, form):
    """The same MAC in any form cannot be registered twice."""
    create(client)
    assert_error(client.post("/api/v1/nodes", json={"mac_address": form}), 409)
    assert listing(client)["total"] == 1


def test_create_logs_the_registration(client):
    """The first history entry records the registration by an operator."""
    node = create(client)
    (entry,) = client.get(f"/api/v1/nodes/{node['id']}/history").json["data"]
    assert entry["from_state"] is None
    assert entry["to_state"] == "discovered"
    assert entry["triggered_by"] == "admin"


# -- show ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["id", MAC, "52-54-00-12-34-56", "525400123456", MAC.upper()])
def test_get_by_id_or_any_mac_form(client, ref):
    """A node is found by its id or by its MAC in any accepted form."""
    node = create(client)
    response = client.get(f"/api/v1/nodes/{node['id'] if ref == 'id' else ref}")
    assert response.status_code == 200
    assert response.json["data"] == node


@pytest.mark.parametrize(
    "ref", ["00000000-0000-4000-8000-000000000000", "52:54:00:ff:ff:ff", "whatever"]
)
def test_missing_node_is_a_json_404(client, ref):
    """An unknown id or MAC gives a JSON 404."""
    create(client)
    assert_error(client.get(f"/api/v1/nodes/{ref}"), 404)


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("patch", "", {"hostname": "x"}),
        ("delete", "", None),
        ("patch", "/state", {"state": "pending"}),
        ("get", "/history", None),
        ("post", "/tags", {"tags": ["a"]}),
        ("delete", "/tags/a", None),
    ],
)
def test_every_node_route_404s_as_json(client, method, suffix, body):
    """Every per-node route answers a missing node with a JSON 404."""
    response = getattr(client, method)(f"/api/v1/nodes/52:54:00:ff:ff:ff{suffix}", json=body)
    assert_error(response, 404)


def test_unknown_route_is_a_json_404(client):
    """Even a URL no view handles gets the JSON error envelope."""
    assert_error(client.get("/api/v1/no-such-thing"), 404)


# -- update -------------------------------------------------------------------------------


def test_patch_sets_workflow_and_hostname(client):
    """PATCH changes descriptive fields and returns the node."""
    node = create(client)
    response = client.patch(
        f"/api/v1/nodes/{MAC}", json={"workflow_id": "test-os", "hostname": "db1"}
    )
    assert response.status_code == 200
    assert response.json["data"]["workflow_id"] == "test-os"
    assert response.json["data"]["hostname"] == "db1"
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"]["workflow_id"] == "test-os"


def test_patch_can_clear_the_workflow(client):
    """``workflow_id: null`` removes the assignment."""
    create(client, workflow_id="test-os")
    response = client.patch(f"/api/v1/nodes/{MAC}", json={"workflow_id": None})
    assert response.status_code == 200
    assert response.json["data"]["workflow_id"] is None


@pytest.mark.parametrize("workflow_id", ["missing", "../test-os", ".."])
def test_patch_with_unknown_workflow_is_422(client, workflow_id):
    """A workflow id with no file (or that tries to escape) is a 422 naming ``workflow_id``."""
    create(client)
    response = client.patch(f"/api/v1/nodes/{MAC}", json={"workflow_id": workflow_id})
    assert_error(response, 422, "workflow_id")
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["workflow_id"] is None


def test_patch_cannot_change_state(client):
    """The state is not a descriptive field: PATCH refuses it instead of bypassing the rules."""
    create(client)
    assert_error(client.patch(f"/api/v1/nodes/{MAC}", json={"state": "active"}), 422, "state")
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


# -- state changes ------------------------------------------------------------------------


def test_legal_state_change_is_200(client, clock):
    """A move the table allows succeeds and is stamped with the time."""
    node = create(client)
    later = clock.advance(minutes=3)
    response = set_state(client, node["id"], "pending", comment="ready")
    assert response.status_code == 200
    assert response.json["data"]["state"] == "pending"
    assert response.json["data"]["state_changed_at"] == later.isoformat()


@pytest.mark.parametrize("target", ["installing", "installed", "active", "install_failed"])
def test_illegal_state_change_is_409_with_valid_transitions(client, target):
    """A move outside the table is a 409 listing where the node may go."""
    node = create(client)
    body = assert_error(set_state(client, node["id"], target), 409)
    assert body["valid_transitions"] == sorted(TRANSITIONS[State.DISCOVERED])
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


def test_move_to_the_same_state_is_409(client):
    """Asking for the state the node is already in is refused."""
    create(client)
    assert_error(set_state(client, MAC, "discovered"), 409)


def test_force_allows_an_illegal_move_and_is_logged(client):
    """``force`` moves the node anyway; the history marks the entry forced."""
    node = create(client)
    response = set_state(client, node["id"], "active", force=True, comment="migrated")
    assert response.status_code == 200
    assert response.json["data"]["state"] == "active"
    entry = client.get(f"/api/v1/nodes/{node['id']}/history").json["data"][-1]
    assert (entry["from_state"], entry["to_state"]) == ("discovered", "active")
    assert entry["metadata"]["forced"] is True
    assert entry["comment"] == "migrated"


@pytest.mark.parametrize("target", [s.value for s in State if s != State.RETIRED])
def test_retired_cannot_be_left_even_with_force(client, target):
    """Out of retired nothing goes, forced or not."""
    node = create(client)
    assert set_state(client, node["id"], "retired").status_code == 200
    for force in (False, True):
        body = assert_error(set_state(client, node["id"], target, force=force), 409)
        assert body["valid_transitions"] == []
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "retired"


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": "sleeping"}, "state"),
        ({}, "state"),
        ({"state": "pending", "force": "sure"}, "force"),
        ({"state": "pending", "comment": "x" * 5000}, "comment"),
        ({"state": "pending", "extra": 1}, "extra"),
    ],
)
def test_bad_state_body_is_422(client, body, field):
    """An unknown state, a missing one or a bad flag is a 422 naming the field."""
    node = create(client)
    response = client.patch(f"/api/v1/nodes/{node['id']}/state", json=body)
    assert_error(response, 422, field)


def test_operator_move_to_pending_resets_the_episode(app, client):
    """From install_failed, an operator's move to pending zeroes the attempt counter."""
    node = create(client)
    assert set_state(client, node["id"], "install_failed", force=True).status_code == 200
    with app.app_context():
        with write_transaction(db.session):
            stored = db.session.get(Node, node["id"])
            stored.install_attempts = 3
            stored.last_install_error = "disk"
    data = set_state(client, node["id"], "pending").json["data"]
    assert (data["install_attempts"], data["last_install_error"]) == (0, None)


# -- history ------------------------------------------------------------------------------


def test_history_lists_changes_oldest_first(client, clock):
    """Every change appears with who made it, its comment and its time."""
    node = create(client)
    clock.advance(minutes=1)
    set_state(client, node["id"], "pending", comment="go")
    retired_at = clock.advance(minutes=1)
    set_state(client, MAC, "retired")
    body = client.get(f"/api/v1/nodes/{MAC}/history").json
    assert body["success"] is True
    assert body["total"] == 3
    moves = [(e["from_state"], e["to_state"]) for e in body["data"]]
    assert moves == [(None, "discovered"), ("discovered", "pending"), ("pending", "retired")]
    assert body["data"][1]["comment"] == "go"
    assert {e["triggered_by"] for e in body["data"]} == {"admin"}
    assert body["data"][2]["created_at"] == retired_at.isoformat()


# -- tags ---------------------------------------------------------------------------------


def test_add_and_remove_tags(client):
    """Tags are added (no duplicates), listed sorted and removed one by one."""
    node = create(client, tags=["rack1"])
    response = client.post(f"/api/v1/nodes/{node['id']}/tags", json={"tags": ["gpu", "rack1"]})
    assert response.status_code == 200
    assert response.json["data"]["tags"] == ["gpu", "rack1"]
    response = client.delete(f"/api/v1/nodes/{MAC}/tags/rack1")
    assert response.status_code == 200
    assert response.json["data"]["tags"] == ["gpu"]
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["tags"] == ["gpu"]


def test_removing_a_missing_tag_is_404(client):
    """Removing a tag the node does not have is a JSON 404."""
    create(client, tags=["rack1"])
    assert_error(client.delete(f"/api/v1/nodes/{MAC}/tags/gpu"), 404)


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    "body",
    [
        {"tags": ["Bad Tag!"]},
        {"tags": ["x" * 51]},
        {"tags": []},
        {"tags": ["a", "a"]},
        {"tags": "rack1"},
        {},
    ],
)
def test_bad_tags_are_422(client, body):
    """Invalid, empty, repeated or missing tags are a 422 naming ``tags``."""
    create(client)
    assert_error(client.post(f"/api/v1/nodes/{MAC}/tags", json=body), 422, "tags")
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["tags"] == []


def test_bad_tag_on_create_is_422(client):
    """Tags given at creation are validated too."""
    response = client.post("/api/v1/nodes", json={"mac_address": MAC, "tags": ["NO WAY"]})
    assert_error(response, 422, "tags")


# -- delete -------------------------------------------------------------------------------


def test_delete_removes_node_and_its_history(app, client):
    """DELETE removes the node, its logs and tags; the node is then 404."""
    node = create(client, tags=["rack1"])
    set_state(client, node["id"], "pending")
    response = client.delete(f"/api/v1/nodes/{MAC}")
    assert response.status_code == 200
    assert response.json["success"] is True
    assert_error(client.get(f"/api/v1/nodes/{node['id']}"), 404)
    with app.app_context():
        for model in (NodeStateLog, NodeTag):
            query = select(func.count()).select_from(model).where(model.node_id == node["id"])
            assert db.session.scalar(query) == 0


def test_deleted_mac_can_register_again_by_boot(client):
    """After DELETE the same hardware boots in as a brand-new discovered node."""
    old = create(client)
    client.delete(f"/api/v1/nodes/{old['id']}")
    response = client.get("/api/v1/boot", query_string={"mac": MAC})
    assert response.status_code == 200
    node = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert node["id"] != old["id"]
    assert node["state"] == "discovered"
    (entry,) = client.get(f"/api/v1/nodes/{MAC}/history").json["data"]
    assert entry["comment"] == "registered by boot"


# -- malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "mac_address"),
        ({"mac_address": "nope"}, "mac_address"),
        ({"mac_address": 525400123456}, "mac_address"),
        ({"mac_address": MAC, "hostname": "bad_host!"}, "hostname"),
        ({"mac_address": MAC, "ip_address": "300.1.1.1"}, "ip_address"),
        ({"mac_address": MAC, "boot_mode": "floppy"}, "boot_mode"),
        ({"mac_address": MAC, "workflow_id": "a/b"}, "workflow_id"),
        ({"mac_address": MAC, "colour": "red"}, "colour"),
    ],
)
def test_invalid_create_body_is_422_naming_the_field(client, body, field):
    """Each invalid field is named in the 422 body, and nothing is created."""
    assert_error(client.post("/api/v1/nodes", json=body), 422, field)
    assert listing(client)["total"] == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"mac_address": ', "application/json"),
        ("not json at all", "application/json"),
        ("mac_address=52:54:00:12:34:56", "application/x-www-form-urlencoded"),
        ('{"mac_address": "52:54:00:12:34:56"}', "text/plain"),
    ],
    ids=["truncated", "garbage", "form", "wrong-type"],
)
def test_body_that_is_not_json_is_422(client, data, content_type):
    """A malformed or non-JSON body is a 422 naming ``body``, never a 400 HTML page or 500."""
    response = client.post("/api/v1/nodes", data=data, content_type=content_type)
    assert_error(response, 422, "body")
    assert listing(client)["total"] == 0


def test_json_array_body_is_422(client):
    """A JSON body that is not an object is refused with a 422."""
    response = client.post("/api/v1/nodes", json=[{"mac_address": MAC}])
    assert_error(response, 422)


def test_malformed_state_body_is_422(client):
    """The state endpoint treats broken JSON the same way."""
    create(client)
    response = client.patch(
        f"/api/v1/nodes/{MAC}/state", data="{state: pending}", content_type="application/json"
    )
    assert_error(response, 422, "body")


def test_health_checks_the_database(client):
    """``/health`` answers 200 when the database does."""
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json["database"] == "ok"


def test_health_and_metrics_show_the_version(client):
    """``/health`` and the ``provisioner_build_info`` metric name the running version."""
    assert client.get("/health").json["version"] == VERSION
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'provisioner_build_info{{version="{VERSION}"}} 1.0' in metrics

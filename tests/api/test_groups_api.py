"""Machine groups through the API and at boot: CRUD, validation, the dry run, the workflow
and variables a group gives, ``auto_install``, and the cache shared by instances."""

import contextlib

import dbcheck
import pytest
from sqlalchemy import Engine
from sqlalchemy import event

MAC = "52:54:00:12:34:56"


def boot(client, mac=MAC, **params):
    answer = client.get(
        "/api/v1/boot",
        query_string={"mac": mac, **params},
        environ_base={"REMOTE_ADDR": "192.0.2.9"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_data(as_text=True)


def create(client, **fields):
    answer = client.post("/api/v1/groups", json=fields)
    assert answer.status_code == 201, answer.json
    return answer.json["data"]


@pytest.fixture
def workflows_dir(workflows_dir):
    """test-os, plus an arm64 workflow and one that uses a group variable."""
    (workflows_dir / "arm-os.yaml").write_text(
        "id: arm-os\nname: ARM OS\narchitecture: arm64\nkernel_path: http://m/k\n"
        "initrd_path: http://m/i\n"
    )
    (workflows_dir / "rack-os.yaml").write_text(
        "id: rack-os\nname: Rack OS\nkernel_path: http://m/k\ninitrd_path: http://m/i\n"
        "cmdline: ntp=${ntp} host=${hostname}\n"
    )
    return workflows_dir


def test_crud(client):
    made = create(client, name="dell", manufacturer="Dell*", workflow_id="test-os", priority=5)
    assert made["mac_prefix"] is None and made["auto_install"] is False

    assert client.get("/api/v1/groups/dell").json["data"]["priority"] == 5
    changed = client.patch("/api/v1/groups/dell", json={"mac_prefix": "52-54-00", "priority": 7})
    assert changed.status_code == 200
    assert changed.json["data"]["mac_prefix"] == "52:54:00"
    assert [g["name"] for g in client.get("/api/v1/groups").json["data"]] == ["dell"]
    assert client.delete("/api/v1/groups/dell").status_code == 200
    assert client.get("/api/v1/groups/dell").status_code == 404
    assert client.get("/api/v1/groups").json["total"] == 0


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    ("body", "field"),
    # The schema's own refusals are all in tests/unit/test_group_schemas.py; here one of
    # them, the parser's, and those that need the workflows.
    [
        ({"name": "match"}, "name"),
        ({"name": "g", "mac_prefix": "52:54:0g"}, "mac_prefix"),
        ({"name": "g", "variables": {"ok": "a\x00b"}}, "body"),
        ({"name": "g", "workflow_id": "no-such"}, "workflow_id"),
        ({"name": "g", "auto_install": True}, "auto_install"),
    ],
)
def test_bad_groups_are_422_naming_the_field(app, client, body, field):
    answer = client.post("/api/v1/groups", json=body)
    assert answer.status_code == 422, answer.json
    assert field in answer.json["errors"]
    assert dbcheck.count_rows(app.config["SQLALCHEMY_DATABASE_URI"], "machine_groups") == 0


def test_a_taken_name_is_409(client):
    create(client, name="g")
    assert client.post("/api/v1/groups", json={"name": "g"}).status_code == 409


def test_patch_cannot_leave_auto_install_without_a_workflow(client):
    create(client, name="g", workflow_id="test-os", auto_install=True)
    answer = client.patch("/api/v1/groups/g", json={"workflow_id": None})
    assert answer.status_code == 422
    assert "auto_install" in answer.json["errors"]


def test_groups_need_an_operator_token(build_app):
    application = build_app(API_TOKENS=["a" * 32])
    assert application.test_client().get("/api/v1/groups").status_code == 401


def test_dry_run_for_an_unknown_mac_and_given_facts(client):
    create(client, name="dell", manufacturer="Dell*", workflow_id="test-os", auto_install=True)
    create(client, name="default", workflow_id="rack-os", variables={"ntp": "10.0.0.1"})

    plain = client.get("/api/v1/groups/match", query_string={"mac": MAC}).json["data"]
    assert plain["group"] == "default" and plain["known_node"] is None
    assert plain["variables"] == {"ntp": "10.0.0.1"}

    dell = client.get(
        "/api/v1/groups/match", query_string={"mac": MAC, "manufacturer": "Dell Inc."}
    ).json["data"]
    assert dell["group"] == "dell"
    assert dell["auto_install"] is True
    assert "before default" in dell["why"]
    assert client.get("/api/v1/groups/match", query_string={"mac": "nope"}).status_code == 422


def test_dry_run_uses_a_known_nodes_facts_and_tags(client):
    create(client, name="rack42", tags=["rack42"], workflow_id="rack-os")
    node = client.post("/api/v1/nodes", json={"mac_address": MAC, "tags": ["rack42"]}).json
    result = client.get("/api/v1/groups/match", query_string={"mac": MAC}).json["data"]
    assert result["known_node"] == node["data"]["id"]
    assert result["group"] == "rack42"
    assert result["auto_install"] is False
    other = client.get("/api/v1/groups/match", query_string={"mac": MAC, "tags": "other"})
    assert other.json["data"]["group"] is None


# -- at boot --------------------------------------------------------------------------------


def pending(client, mac=MAC, **fields):
    node = client.post("/api/v1/nodes", json={"mac_address": mac, **fields}).json["data"]
    answer = client.patch(f"/api/v1/nodes/{node['id']}/state", json={"state": "pending"})
    assert answer.status_code == 200
    return node


def test_a_pending_node_without_workflow_installs_its_groups_with_its_variables(app, client):
    create(
        client,
        name="lab",
        mac_prefix="52:54:00",
        workflow_id="rack-os",
        variables={"ntp": "10.0.0.1 && reboot"},
    )
    node = pending(client, hostname="web1")
    script = boot(client)
    assert "kernel http://m/k ntp=10.0.0.1____reboot host=web1 || goto failed" in script
    history = client.get(f"/api/v1/nodes/{node['id']}/history").json["data"]
    assert history[-1]["to_state"] == "installing"
    assert history[-1]["metadata"] == {"workflow_id": "rack-os", "attempt": 1, "group": "lab"}


def test_the_nodes_own_workflow_wins_but_the_group_still_gives_variables(client):
    create(client, name="lab", workflow_id="test-os", variables={"ntp": "10.0.0.1"})
    pending(client, workflow_id="rack-os")
    assert "ntp=10.0.0.1" in boot(client)


def test_a_group_matching_on_boot_facts(client):
    create(client, name="efi", platform="efi", workflow_id="rack-os", variables={"ntp": "e"})
    create(client, name="bios", platform="pcbios", workflow_id="rack-os", variables={"ntp": "b"})
    pending(client)
    assert "ntp=e " in boot(client, platform="efi")


def test_auto_install_sends_a_new_machine_straight_to_its_installer(app, client):
    create(client, name="r650", manufacturer="Dell*", workflow_id="test-os", auto_install=True)
    script = boot(client, vendor="Dell Inc.", model="PowerEdge R650")
    assert "kernel http://prov.test:8080/files/vmlinuz" in script
    node = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert node["state"] == "installing"
    history = client.get(f"/api/v1/nodes/{MAC}/history").json["data"]
    assert [(h["from_state"], h["to_state"], h["triggered_by"]) for h in history] == [
        (None, "discovered", "boot"),
        ("discovered", "pending", "group"),
        ("pending", "installing", "boot"),
    ]
    assert history[1]["comment"] == "auto_install: group r650"


def test_auto_install_applies_only_to_machines_that_match(client):
    create(client, name="r650", manufacturer="Dell*", workflow_id="test-os", auto_install=True)
    assert "registered" in boot(client, vendor="HPE")
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "discovered"


def test_install_configs_use_the_groups_workflow_and_variables(app, client, workflows_dir):
    (workflows_dir / "rack-os.tmpl").write_text("ntp {{ ntp }} host {{ hostname }}\n")
    (workflows_dir / "rack-os.yaml").write_text(
        "id: rack-os\nname: Rack OS\nkernel_path: http://m/k\ninitrd_path: http://m/i\n"
        "templates:\n  ks.cfg: rack-os.tmpl\n"
    )
    create(client, name="lab", workflow_id="rack-os", variables={"ntp": "pool;rm -rf"})
    node = client.post("/api/v1/nodes", json={"mac_address": MAC, "hostname": "web1"}).json
    text = client.get(f"/api/v1/nodes/{node['data']['id']}/config/ks.cfg").get_data(as_text=True)
    assert text == "ntp pool_rm_-rf host web1\n"


def test_a_group_change_reaches_another_instance_at_its_next_lookup(build_app):
    """Two instances on one database: the second's cache reloads when the version moves,
    and only then."""
    first, second = build_app(), build_app()
    one, two = first.test_client(), second.test_client()
    cache = second.extensions["provisioner.groups"]
    create(one, name="lab", workflow_id="test-os")
    assert two.get("/api/v1/groups/match", query_string={"mac": MAC}).json["data"]["group"] == (
        "lab"
    )
    reloads = cache.reloads
    two.get("/api/v1/groups/match", query_string={"mac": MAC})
    assert cache.reloads == reloads  # unchanged: served from the cache
    one.patch("/api/v1/groups/lab", json={"mac_prefix": "aa"})
    assert two.get("/api/v1/groups/match", query_string={"mac": MAC}).json["data"]["group"] is None
    assert cache.reloads == reloads + 1
    one.delete("/api/v1/groups/lab")
    create(one, name="lab", workflow_id="test-os")  # same name, same count: still noticed
    assert two.get("/api/v1/groups/match", query_string={"mac": MAC}).json["data"]["group"] == (
        "lab"
    )


@contextlib.contextmanager
def every_statement():
    """The SQL every engine runs meanwhile (boots' single reads have an engine of their own
    on SQLite)."""
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", note)


def test_a_known_machine_booting_its_disk_never_reads_the_groups(app, client):
    create(client, name="lab", workflow_id="test-os")
    boot(client)  # registers it
    with every_statement() as statements:
        boot(client)
    assert statements
    assert not any("machine_groups" in statement for statement in statements)


def test_an_install_boot_reads_the_groups_once_from_the_cache(app, client):
    create(client, name="lab", workflow_id="test-os")
    client.get("/api/v1/groups/match", query_string={"mac": MAC})  # loads the cache
    pending(client)
    with every_statement() as statements:
        boot(client)
    group_reads = [s for s in statements if "machine_groups" in s]
    assert len(group_reads) == 1 and "machine_groups_version" in group_reads[0]


def test_the_dashboard_lists_groups_and_shows_a_nodes_group(client):
    create(
        client,
        name="lab",
        mac_prefix="52:54:00",
        workflow_id="test-os",
        variables={"ntp": "<b>x</b>"},
        description="<i>rack 42</i>",
    )
    page = client.get("/groups").get_data(as_text=True)
    assert "&lt;i&gt;rack 42&lt;/i&gt;" in page
    assert 'data-group="lab"' in page and "mac_prefix=52:54:00" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    boot(client)
    node_page = client.get(f"/nodes/{MAC}").get_data(as_text=True)
    assert 'test-os <span class="muted">(from group lab)</span>' in node_page


def test_an_install_boot_reads_tags_only_when_a_group_selects_by_tag(app, client):
    create(client, name="lab", mac_prefix="52:54:00", workflow_id="test-os")
    pending(client)
    with every_statement() as statements:
        boot(client)
    assert not any("node_tags" in s for s in statements)
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["state"] == "installing"

"""The node-facing boot endpoints: every branch of ``GET /api/v1/boot`` and the chain script."""

import itertools
import os

import pytest
from sqlalchemy import event
from sqlalchemy import func
from sqlalchemy import select
from workflowfiles import write_test_workflow

from provisioner import create_app
from provisioner.domain.lifecycle import State
from provisioner.extensions import db
from provisioner.models import Node
from provisioner.models import NodeStateLog
from provisioner.serve import upgrade_database
from provisioner.store.transactions import write_transaction

MAC = "52:54:00:12:34:56"
LOCAL_BOOT_STATES = [
    State.INSTALLING,
    State.INSTALLED,
    State.ACTIVE,
    State.INSTALL_FAILED,
    State.RETIRED,
    State.DISCOVERED,
    State.REPROVISION,
]
_macs = itertools.count(1)


def script_lines(response, status: int = 200) -> list[str]:
    """Check the response is an iPXE script with ``status``; return its lines."""
    assert response.status_code == status
    assert response.mimetype == "text/plain"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "#!ipxe"
    return lines


def boot(client, mac: str = MAC, ip: str = "192.0.2.10", **params):
    """Ask the server what to boot, as iPXE would, from ``ip``."""
    return client.get(
        "/api/v1/boot", query_string={"mac": mac, **params}, environ_base={"REMOTE_ADDR": ip}
    )


def add_node(app, state: str, now, mac: str | None = None, **fields) -> str:
    """Store a node directly in ``state``; return its id."""
    with app.app_context():
        node = Node(
            mac_address=mac or f"52:54:00:aa:00:{next(_macs):02x}",
            state=state,
            created_at=now,
            updated_at=now,
            state_changed_at=now,
            **{"install_attempts": 0, **fields},
        )
        with write_transaction(db.session):
            db.session.add(node)
        return node.id


def get_node(app, node_id: str) -> Node:
    """The node as stored now."""
    with app.app_context():
        return db.session.get(Node, node_id)


def history(app, node_id: str) -> list[NodeStateLog]:
    """The node's state log, oldest first."""
    with app.app_context():
        query = select(NodeStateLog).where(NodeStateLog.node_id == node_id)
        return list(db.session.scalars(query.order_by(NodeStateLog.id)))


def node_count(app) -> int:
    """How many nodes exist."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Node))


# -- unknown machines ---------------------------------------------------------------------


def test_unknown_mac_is_registered_as_discovered(app, client, clock):
    """With AUTO_REGISTER a new MAC becomes a discovered node and boots locally."""
    lines = script_lines(boot(client, "52-54-00-12-34-56", uuid="abc-123", serial="SN1"))
    with app.app_context():
        node = db.session.scalars(select(Node)).one()
    assert node.mac_address == MAC
    assert node.state == State.DISCOVERED
    assert node.system_uuid == "abc-123"
    assert node.serial_number == "SN1"
    assert node.created_at == node.state_changed_at == node.last_seen_at == clock()
    assert any(node.id in line for line in lines if line.startswith("echo "))
    assert lines[-1] == "exit"
    assert not any(line.startswith(("kernel", "chain")) for line in lines)
    (entry,) = history(app, node.id)
    assert (entry.from_state, entry.to_state) == (None, State.DISCOVERED)
    assert entry.triggered_by == "boot"
    assert entry.comment == "registered by boot"


def test_unknown_mac_without_auto_register_just_exits(app, client):
    """With AUTO_REGISTER off an unknown machine boots locally and nothing is stored."""
    app.config["AUTO_REGISTER"] = False
    lines = script_lines(boot(client))
    assert lines[-1] == "exit"
    assert not any(line.startswith("kernel") for line in lines)
    assert node_count(app) == 0


def test_registered_node_boots_locally_on_its_next_boot(app, client):
    """The second boot of a freshly registered machine does not register it again."""
    script_lines(boot(client))
    lines = script_lines(boot(client))
    assert lines[-1] == "exit"
    assert node_count(app) == 1


# -- pending nodes ------------------------------------------------------------------------


def test_pending_node_with_workflow_gets_the_install_script(app, client, clock):
    """The install script has the rendered kernel, initrd and cmdline, each guarded."""
    node_id = add_node(
        app, State.PENDING, clock(), mac=MAC, workflow_id="test-os", hostname="web1"
    )
    booted_at = clock.advance(minutes=2)
    lines = script_lines(boot(client, "525400123456"))
    cmdline = f"console=ttyS0 node={node_id} mac={MAC} host=web1"
    assert f"kernel http://prov.test:8080/files/vmlinuz {cmdline} || goto failed" in lines
    assert "initrd http://mirror.example/initrd.gz || goto failed" in lines
    assert "boot || goto failed" in lines
    failed = lines.index(":failed")
    assert failed > lines.index("boot || goto failed")
    assert any(line.startswith("echo ") for line in lines[failed + 1 :])
    assert lines[-1] == "exit"
    assert not any("${" in line for line in lines if line.startswith(("kernel", "initrd")))
    node = get_node(app, node_id)
    assert node.state == State.INSTALLING
    assert node.state_changed_at == booted_at
    entry = history(app, node_id)[-1]
    assert (entry.from_state, entry.to_state) == (State.PENDING, State.INSTALLING)
    assert entry.triggered_by == "boot"
    assert entry.created_at == booted_at


def test_install_script_is_served_once_then_local_boot(app, client, clock):
    """A node that never reports does not reinstall on every boot."""
    node_id = add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="test-os")
    assert any(line.startswith("kernel") for line in script_lines(boot(client)))
    lines = script_lines(boot(client))
    assert not any(line.startswith("kernel") for line in lines)
    assert lines[-1] == "exit"
    assert len(history(app, node_id)) == 1


def test_starting_an_install_keeps_the_attempt_counter(app, client, clock):
    """A boot that starts a retry does not reset ``install_attempts`` or the last error."""
    node_id = add_node(
        app,
        State.PENDING,
        clock(),
        mac=MAC,
        workflow_id="test-os",
        install_attempts=2,
        last_install_error="timeout",
    )
    script_lines(boot(client))
    node = get_node(app, node_id)
    assert node.state == State.INSTALLING
    assert (node.install_attempts, node.last_install_error) == (2, "timeout")


def test_pending_node_without_workflow_waits_and_exits(app, client, clock):
    """No workflow: the script says so, pauses so a person can read it, and boots locally."""
    node_id = add_node(app, State.PENDING, clock(), mac=MAC)
    lines = script_lines(boot(client))
    assert any(line.startswith("echo ") and "workflow" in line for line in lines)
    assert any(line.startswith("sleep ") for line in lines)
    assert lines[-1] == "exit"
    assert not any(line.startswith("kernel") for line in lines)
    assert get_node(app, node_id).state == State.PENDING
    assert history(app, node_id) == []


@pytest.mark.parametrize(
    ("file_name", "content"),
    [
        ("broken.yaml", "id: broken\nname: Broken\n"),
        ("broken.yaml", "id: broken\nname: [unclosed\n"),
        ("broken.json", '{"id": "broken", "name": "Broken",'),
        (
            "broken.yaml",
            "id: broken\nname: Broken\nkernel_path: /k\ninitrd_path: /i\ncmdline: x=${nope}\n",
        ),
        ("broken.yaml", "id: other\nname: Broken\nkernel_path: /k\ninitrd_path: /i\n"),
        (None, None),
    ],
    ids=["missing-fields", "bad-yaml", "bad-json", "unknown-variable", "wrong-id", "no-file"],
)
def test_pending_node_with_broken_workflow_waits_and_exits(
    app, client, clock, workflows_dir, file_name, content
):
    """A workflow that fails to load: the script says why, pauses, boots locally; still pending."""
    if file_name:
        (workflows_dir / file_name).write_text(content)
    node_id = add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="broken")
    lines = script_lines(boot(client))
    echoes = [line for line in lines if line.startswith("echo ")]
    assert any("broken" in line for line in echoes)
    assert not any("${" in line for line in echoes)
    assert any(line.startswith("sleep ") for line in lines)
    assert lines[-1] == "exit"
    assert not any(line.startswith(("kernel", "initrd")) for line in lines)
    assert get_node(app, node_id).state == State.PENDING
    assert history(app, node_id) == []


def test_pending_node_without_hostname_gets_one_from_its_mac(app, client, clock):
    """``${hostname}`` is never empty (an empty ``hostname=`` stops Debian's installer)."""
    add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="test-os")
    lines = script_lines(boot(client))
    kernel = next(line for line in lines if line.startswith("kernel "))
    assert " host=node-525400123456 " in kernel


def write_workflow_for_mode(workflows_dir, boot_mode: str) -> None:
    write_test_workflow(
        workflows_dir,
        f"only-{boot_mode}",
        kernel_path="http://mirror.example/vmlinuz",
        initrd_path="http://mirror.example/initrd.gz",
        cmdline=None,
        boot_mode=boot_mode,
    )


@pytest.mark.parametrize(
    ("boot_mode", "platform", "booted"), [("uefi", "pcbios", "BIOS"), ("bios", "efi", "UEFI")]
)
def test_a_workflow_for_other_firmware_is_refused_with_a_message(
    app, client, clock, workflows_dir, boot_mode, platform, booted
):
    """A BIOS machine never gets a UEFI-only workflow (nor the reverse); it stays pending."""
    write_workflow_for_mode(workflows_dir, boot_mode)
    node_id = add_node(app, State.PENDING, clock(), mac=MAC, workflow_id=f"only-{boot_mode}")
    lines = script_lines(boot(client, platform=platform))
    echoes = " ".join(line for line in lines if line.startswith("echo "))
    assert f"needs {boot_mode.upper()} firmware" in echoes
    assert f"booted in {booted} mode" in echoes
    assert lines[-1] == "exit"
    assert not any(line.startswith(("kernel", "initrd")) for line in lines)
    node = get_node(app, node_id)
    assert node.state == State.PENDING
    assert node.boot_mode == booted.lower()
    assert history(app, node_id) == []


@pytest.mark.parametrize("platform", ["efi", None])
def test_a_uefi_workflow_checks_the_platform_in_the_script(
    app, client, clock, workflows_dir, platform
):
    """Served to UEFI (or to a request that did not say), the script checks ``${platform}``."""
    write_workflow_for_mode(workflows_dir, "uefi")
    node_id = add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="only-uefi")
    lines = script_lines(boot(client, **({"platform": platform} if platform else {})))
    guard = lines.index("iseq ${platform} efi || goto wrong_platform")
    kernel = next(i for i, line in enumerate(lines) if line.startswith("kernel "))
    assert guard < lines.index(":wrong_platform") < lines.index(":fetch") < kernel
    refusal = lines[lines.index(":wrong_platform") : lines.index(":fetch")]
    assert any("needs UEFI firmware" in line for line in refusal)
    assert refusal[-1] == "exit"
    assert get_node(app, node_id).state == State.INSTALLING


def test_a_workflow_for_any_firmware_has_no_platform_check(app, client, clock):
    add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="test-os")
    lines = script_lines(boot(client, platform="pcbios"))
    assert not any("${platform}" in line for line in lines)
    assert any(line.startswith("kernel ") for line in lines)


# -- every other state boots locally ------------------------------------------------------


@pytest.mark.parametrize("state", LOCAL_BOOT_STATES, ids=str)
def test_other_states_boot_locally(app, client, clock, state):
    """installing, installed, active, install_failed, retired, discovered, reprovision: exit."""
    node_id = add_node(app, state, clock(), mac=MAC, workflow_id="test-os")
    lines = script_lines(boot(client))
    assert lines[-1] == "exit"
    assert not any(line.startswith(("kernel", "initrd", "boot", "chain")) for line in lines)
    assert get_node(app, node_id).state == state
    assert history(app, node_id) == []


# -- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any query
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"mac": ""},
        {"mac": "not-a-mac"},
        {"mac": "52:54:00:12:34"},
        {"mac": "52:54-00:12:34:56"},
    ],
    ids=["missing", "empty", "garbage", "short", "mixed-separators"],
)
def test_missing_or_malformed_mac_is_a_400_script(app, client, query):
    """A bad MAC gets HTTP 400 with a script that echoes the problem; nothing is stored."""
    lines = script_lines(client.get("/api/v1/boot", query_string=query), status=400)
    echoes = [line for line in lines if line.startswith("echo ")]
    assert any("mac" in line.lower() for line in echoes)
    assert lines[-1] == "exit"
    assert node_count(app) == 0


def test_echoed_problem_cannot_inject_ipxe_commands(client):
    """User input echoed back never carries ``${...}`` or a second command."""
    response = client.get("/api/v1/boot", query_string={"mac": "${net0/ip}||shell\nchain x"})
    lines = script_lines(response, status=400)
    assert not any("${" in line or "||" in line for line in lines)
    assert not any(line.startswith(("shell", "chain")) for line in lines)


# -- sightings ----------------------------------------------------------------------------


def count_writes(app, action) -> int:
    """Run ``action`` and count the INSERT/UPDATE/DELETE statements it sends."""
    writes = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(writes)


def test_boot_records_last_seen_and_ip(app, client, clock):
    """A boot stores when the node was seen and the address it came from."""
    node_id = add_node(app, State.ACTIVE, clock(), mac=MAC)
    seen = clock.advance(minutes=10)
    script_lines(boot(client, ip="198.51.100.7"))
    node = get_node(app, node_id)
    assert node.last_seen_at == seen
    assert node.ip_address == "198.51.100.7"


def test_repeated_boot_within_a_minute_does_not_write(app, client, clock):
    """Within 60 s a second boot from the same address is a pure read; after it, a write."""
    node_id = add_node(app, State.ACTIVE, clock(), mac=MAC)
    first = clock.advance(minutes=1)
    script_lines(boot(client))
    clock.advance(seconds=59)
    assert count_writes(app, lambda: script_lines(boot(client))) == 0
    assert get_node(app, node_id).last_seen_at == first
    later = clock.advance(seconds=2)
    assert count_writes(app, lambda: script_lines(boot(client))) > 0
    assert get_node(app, node_id).last_seen_at == later


def test_new_ip_within_a_minute_is_recorded(app, client, clock):
    """A changed address is stored even inside the 60 s window."""
    node_id = add_node(app, State.INSTALLED, clock(), mac=MAC)
    script_lines(boot(client, ip="192.0.2.10"))
    clock.advance(seconds=5)
    script_lines(boot(client, ip="192.0.2.99"))
    assert get_node(app, node_id).ip_address == "192.0.2.99"


def test_trusted_proxy_address_is_used_for_ip(app_config, monkeypatch, tmp_path):
    """With TRUSTED_PROXIES=1 the X-Forwarded-For address is the node's IP."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    app = create_app(app_config | {"TRUSTED_PROXIES": 1})
    upgrade_database(app)
    try:
        response = app.test_client().get(
            "/api/v1/boot",
            query_string={"mac": MAC},
            headers={"X-Forwarded-For": "203.0.113.5"},
            environ_base={"REMOTE_ADDR": "10.0.0.1"},
        )
        script_lines(response)
        with app.app_context():
            node = db.session.scalars(select(Node)).one()
        assert node.ip_address == "203.0.113.5"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_forwarded_for_is_ignored_without_trusted_proxies(app, client):
    """By default a client cannot choose its recorded IP with X-Forwarded-For."""
    response = client.get(
        "/api/v1/boot",
        query_string={"mac": MAC},
        headers={"X-Forwarded-For": "203.0.113.5"},
        environ_base={"REMOTE_ADDR": "10.0.0.1"},
    )
    script_lines(response)
    with app.app_context():
        assert db.session.scalars(select(Node)).one().ip_address == "10.0.0.1"


# -- MAC forms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form", ["52:54:00:12:34:56", "52-54-00-12-34-56", "525400123456", "52:54:00:12:34:56".upper()]
)
def test_every_mac_form_finds_the_same_node(app, client, clock, form):
    """A node registered under one form is found by all the others."""
    node_id = add_node(app, State.INSTALLED, clock(), mac=MAC)
    clock.advance(minutes=5)
    lines = script_lines(boot(client, form))
    assert any(node_id in line for line in lines)
    assert node_count(app) == 1
    assert get_node(app, node_id).last_seen_at == clock()


def test_registration_stores_the_normalised_mac(app, client):
    """Booting with an upper-case bare MAC registers the canonical form."""
    script_lines(boot(client, "525400ABCDEF"))
    script_lines(boot(client, "52-54-00-ab-cd-ef"))
    with app.app_context():
        assert db.session.scalars(select(Node.mac_address)).all() == ["52:54:00:ab:cd:ef"]


# -- the chain script ---------------------------------------------------------------------


def test_chain_script_points_at_the_boot_endpoint(client):
    """``boot.ipxe`` chains to ``/api/v1/boot`` with the MAC and what iPXE knows of the
    machine; free text URI-encoded by iPXE."""
    lines = script_lines(client.get("/api/v1/ipxe/boot.ipxe"))
    assert (
        "chain http://prov.test:8080/api/v1/boot?mac=${net0/mac}&uuid=${uuid}"
        "&serial=${serial:uristring}&platform=${platform}&arch=${buildarch}"
        "&vendor=${manufacturer:uristring}&model=${product:uristring}"
        "&asset=${asset:uristring} || exit"
    ) in lines


def test_chain_script_uses_the_request_host_without_server_url(app, client):
    """With no SERVER_URL the base URL is the one the request came to."""
    app.config["SERVER_URL"] = ""
    response = client.get("/api/v1/ipxe/boot.ipxe", base_url="http://10.9.8.7:8081")
    lines = script_lines(response)
    assert any(
        line.startswith("chain http://10.9.8.7:8081/api/v1/boot?mac=${net0/mac}") for line in lines
    )


def test_install_script_uses_the_request_host_without_server_url(app, client, clock):
    """A server-relative kernel path is resolved against the request's host when unset."""
    app.config["SERVER_URL"] = ""
    add_node(app, State.PENDING, clock(), mac=MAC, workflow_id="test-os")
    response = client.get(
        "/api/v1/boot", query_string={"mac": MAC}, base_url="http://10.9.8.7:8081"
    )
    lines = script_lines(response)
    assert any(line.startswith("kernel http://10.9.8.7:8081/files/vmlinuz ") for line in lines)


def test_boot_with_unknown_query_parameters_still_works(client):
    """Extra parameters from newer iPXE scripts are ignored, not refused."""
    script_lines(boot(client, buildarch="x86_64", unknown="1"))

"""Report tokens (REPORT_AUTH = "token"): minted per install attempt, checked on every report.

The boot endpoint mints a token when it serves the installer and hands it to the workflow as
``${report_token}``; a report must present it (Bearer, X-Report-Token or ``?token=``). A
wrong or missing token writes nothing, counts a rejection, and says nothing about whether the
MAC exists. The previous attempt's token is still heard (recorded as stale), an older one not.
"""

import os
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from workflowfiles import write_test_workflow

from provisioner import create_app
from provisioner.domain.tokens import token_hash
from provisioner.extensions import db
from provisioner.serve import upgrade_database

MAC = "52:54:00:70:00:01"
OTHER_MAC = "52:54:00:70:00:02"
UNKNOWN_MAC = "52:54:00:70:00:99"
WORKFLOW = "tok-os"
WRONG_TOKEN = "definitely-not-the-report-token-0123456789abc"
STALE_EFFECT = "ignored: report from a previous install attempt"


@pytest.fixture
def workflows_dir(workflows_dir: Path) -> Path:
    """The shared workflows directory plus one whose command line carries the token."""
    write_test_workflow(
        workflows_dir,
        WORKFLOW,
        kernel_path="${server}/files/vmlinuz",
        initrd_path="${server}/files/initrd.img",
        cmdline="console=ttyS0 report_token=${report_token} report_url=${report_url}",
    )
    return workflows_dir


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return app_config | {"REPORT_AUTH": "token"}


@pytest.fixture
def rows(app):
    """Count a table's rows, in a session of its own (what is committed)."""

    def count(table: str) -> int:
        with app.app_context():
            return db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()

    return count


@pytest.fixture
def snapshot(client, rows):
    """Everything a report could change: event and state-log rows and every node."""

    def take() -> dict:
        return {
            "events": rows("node_events"),
            "logs": rows("node_state_logs"),
            "nodes": client.get("/api/v1/nodes").json["data"],
        }

    return take


def rejected_count() -> float:
    value = REGISTRY.get_sample_value("provisioner_report_rejected_total", {"reason": "token"})
    return value or 0.0


def register(client, mac: str = MAC) -> dict:
    """A node with the token workflow, pending (ready to be served the installer)."""
    response = client.post("/api/v1/nodes", json={"mac_address": mac, "workflow_id": WORKFLOW})
    assert response.status_code == 201, response.json
    response = client.patch(f"/api/v1/nodes/{mac}/state", json={"state": "pending"})
    assert response.status_code == 200, response.json
    return response.json["data"]


def boot(client, mac: str = MAC) -> str:
    """Boot the machine; the iPXE script it gets."""
    response = client.get(f"/api/v1/boot?mac={mac}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def boot_installer(client, mac: str = MAC) -> str:
    """Boot a pending machine into its installer and return the report token it was given."""
    script = boot(client, mac)
    found = re.search(r"report_token=(\S+)", script)
    assert found, script
    assert node_state(client, mac) == "installing"
    return found.group(1)


def node_state(client, mac: str = MAC) -> str:
    return client.get(f"/api/v1/nodes/{mac}").json["data"]["state"]


def report(client, body: dict, token: str | None = None, *, how: str = "bearer"):
    """POST a report, sending ``token`` the way ``how`` says."""
    body = {"mac_address": MAC} | body
    if token is None:
        return client.post("/api/v1/report", json=body)
    if how == "bearer":
        return client.post(
            "/api/v1/report", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    if how == "header":
        return client.post("/api/v1/report", json=body, headers={"X-Report-Token": token})
    return client.post("/api/v1/report", json=body, query_string={"token": token})


@pytest.fixture
def installing(client) -> str:
    """A node served its installer; its report token."""
    register(client)
    return boot_installer(client)


def events_of(client, mac: str = MAC) -> list[dict]:
    return client.get(f"/api/v1/nodes/{mac}/events", query_string={"limit": 500}).json["data"]


def assert_refused(response) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["success"] is False
    assert "token" in response.json["message"].lower()


# -- the token in the installer ---------------------------------------------------------------


def test_boot_puts_a_fresh_token_and_the_report_url_on_the_kernel_cmdline(client):
    """``${report_token}`` and ``${report_url}`` are rendered into the installer's cmdline."""
    register(client)

    script = boot(client)

    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    token = re.search(r"report_token=(\S+)", kernel).group(1)
    assert "report_url=http://prov.test:8080/api/v1/report" in kernel
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", token), token  # 32+ bytes from secrets
    assert "${" not in kernel


def test_each_install_attempt_gets_a_different_token(client):
    """Two nodes, or two attempts of one node, never share a token."""
    register(client)
    register(client, OTHER_MAC)

    first = boot_installer(client)
    other = boot_installer(client, OTHER_MAC)
    report(client, {"event": "install_failed"}, first)
    second = boot_installer(client)

    assert len({first, other, second}) == 3


def test_a_booting_installed_node_is_not_given_a_new_token(client, installing):
    """Only serving the installer mints a token: a local boot leaves the token valid."""
    script = boot(client)

    assert "report_token" not in script
    assert report(client, {"event": "install_complete"}, installing).status_code == 200


# -- presenting the token --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "header", "query"])
def test_report_with_the_token_is_accepted(client, installing, how):
    """Bearer, X-Report-Token and ``?token=`` (for cloud-init phone_home) all work."""
    progress = report(client, {"event": "install_progress", "progress": 40}, installing, how=how)
    complete = report(client, {"event": "install_complete"}, installing, how=how)

    assert progress.status_code == 200, progress.json
    assert complete.status_code == 200, complete.json
    assert complete.json["data"]["state"] == "installed"
    assert [event["effect"] for event in events_of(client)][:2] == [
        "installing→installed",
        "progress 40%",
    ]


def test_token_keeps_working_after_the_install_for_first_boot(client, installing):
    """The installed system reports first_boot with the same token."""
    report(client, {"event": "install_complete"}, installing)

    response = report(client, {"event": "first_boot"}, installing, how="query")

    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == "active"


# -- refusing a report -----------------------------------------------------------------------

REFUSALS = {
    "missing": {},
    "wrong-bearer": {"headers": {"Authorization": f"Bearer {WRONG_TOKEN}"}},
    "wrong-header": {"headers": {"X-Report-Token": WRONG_TOKEN}},
    "wrong-query": {"query_string": {"token": WRONG_TOKEN}},
    "empty-bearer": {"headers": {"Authorization": "Bearer "}},
    "empty-header": {"headers": {"X-Report-Token": ""}},
    "empty-query": {"query_string": {"token": ""}},
    "basic-scheme": {"headers": {"Authorization": "Basic dXNlcjpwYXNz"}},
    "token-hash": {"headers": {"X-Report-Token": "HASH"}},
}


def refusal_request(name: str, token: str) -> dict:
    """The request keyword arguments of ``REFUSALS[name]`` (``HASH``: the token's hash)."""
    kwargs = REFUSALS[name]
    if "HASH" in str(kwargs):
        return {"headers": {"X-Report-Token": token_hash(token)}}
    return kwargs


#: Every way to send no or a wrong token with an event that moves the node, and each kind
#: of write (a move, a counted failure, a log-only event written with plain statements) with
#: one of them: the token is checked before the report takes either path.
REFUSED_REPORTS = [(name, "install_complete") for name in REFUSALS] + [
    ("wrong-bearer", "install_failed"),
    ("missing", "heartbeat"),
    ("token-hash", "heartbeat"),
]


@pytest.mark.parametrize(("name", "event"), REFUSED_REPORTS)
def test_wrong_or_missing_token_is_401_writes_nothing_and_is_counted(
    client, clock, installing, snapshot, name, event
):
    """No event row, no change to the node, and one more rejected report in the counter."""
    before = snapshot()
    rejected = rejected_count()
    clock.advance(minutes=5)

    response = client.post(
        "/api/v1/report",
        json={"mac_address": MAC, "event": event, "hostname": "changed", "message": "x"},
        **refusal_request(name, installing),
    )

    assert_refused(response)
    assert snapshot() == before
    assert rejected_count() == rejected + 1


def test_another_nodes_token_is_refused(client, installing, snapshot):
    """A token belongs to one node: a machine cannot report for its neighbour."""
    register(client, OTHER_MAC)
    other_token = boot_installer(client, OTHER_MAC)
    before = snapshot()

    response = report(client, {"event": "install_complete"}, other_token)

    assert_refused(response)
    assert snapshot() == before


def test_a_node_never_served_the_installer_has_no_token_to_match(client, snapshot):
    """A registered node without a token refuses every report, even an empty token."""
    register(client)
    before = snapshot()

    missing = report(client, {"event": "install_started"})
    guessed = report(client, {"event": "install_started"}, token_hash(""))

    assert_refused(missing)
    assert_refused(guessed)
    assert snapshot() == before


@pytest.mark.parametrize("name", ["missing", "wrong-bearer", "wrong-query"])
def test_unknown_mac_gets_the_same_answer_as_a_wrong_token(client, installing, snapshot, name):
    """The answer for an unknown MAC is the known MAC's: it does not reveal which exist."""
    before = snapshot()
    rejected = rejected_count()
    kwargs = refusal_request(name, installing)
    body = {"event": "install_complete"}

    known = client.post("/api/v1/report", json={"mac_address": MAC} | body, **kwargs)
    unknown = client.post("/api/v1/report", json={"mac_address": UNKNOWN_MAC} | body, **kwargs)

    assert_refused(unknown)
    assert (unknown.status_code, unknown.json) == (known.status_code, known.json)
    assert UNKNOWN_MAC not in unknown.get_data(as_text=True)
    assert unknown.headers.get("WWW-Authenticate") == known.headers.get("WWW-Authenticate")
    assert snapshot() == before
    assert rejected_count() == rejected + 2


def test_unknown_mac_with_a_real_token_of_another_node_is_refused_alike(client, installing):
    """Even a valid token does not make an unknown MAC visible."""
    wrong = report(client, {"event": "heartbeat"}, WRONG_TOKEN)

    unknown = client.post(
        "/api/v1/report",
        json={"mac_address": UNKNOWN_MAC, "event": "heartbeat"},
        headers={"Authorization": f"Bearer {installing}"},
    )

    assert unknown.status_code == 401
    assert unknown.json == wrong.json


# -- retries: the previous attempt's token is stale, an older one is refused ------------------


def fail_attempt(client, clock, token: str, how: str) -> None:
    """End the current install attempt: by the installer's report or by a boot timeout."""
    if how == "failed":
        response = report(client, {"event": "install_failed", "message": "disk"}, token)
        assert response.status_code == 200, response.json
        assert response.json["data"]["state"] == "pending"
    else:
        clock.advance(minutes=61)  # past INSTALL_TIMEOUT_MINUTES; the next boot times it out


@pytest.mark.parametrize("how", ["failed", "timeout"])
def test_late_report_with_the_previous_attempts_token_is_recorded_as_stale(
    client, clock, installing, rows, how
):
    """The first installer could not know it was replaced: its report is kept, not applied."""
    first = installing
    fail_attempt(client, clock, first, how)
    second = boot_installer(client)
    assert second != first
    node_before = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    logs_before = rows("node_state_logs")
    events_before = rows("node_events")

    late = report(client, {"event": "install_complete", "hostname": "late-host"}, first)

    assert late.status_code == 200, late.json
    assert late.json["data"]["state"] == "installing"
    assert "previous install attempt" in late.json["message"]
    assert rows("node_events") == events_before + 1
    assert rows("node_state_logs") == logs_before
    node_after = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert node_after["state"] == "installing"
    assert node_after["hostname"] == node_before["hostname"]
    assert node_after["install_attempts"] == node_before["install_attempts"]
    latest = events_of(client)[0]
    assert latest["event_type"] == "install_complete"
    assert latest["effect"] == STALE_EFFECT


def test_late_install_failed_with_the_previous_token_does_not_count_an_attempt(
    client, clock, installing
):
    first = installing
    fail_attempt(client, clock, first, "failed")
    second = boot_installer(client)
    attempts = client.get(f"/api/v1/nodes/{MAC}").json["data"]["install_attempts"]

    late = report(client, {"event": "install_failed", "message": "late"}, first, how="header")

    assert late.status_code == 200, late.json
    node = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    assert (node["state"], node["install_attempts"]) == ("installing", attempts)
    assert events_of(client)[0]["effect"] == STALE_EFFECT
    assert report(client, {"event": "install_complete"}, second).json["data"]["state"] == (
        "installed"
    )


def test_late_status_only_report_with_the_previous_token_changes_nothing(
    client, clock, installing, rows
):
    """A report without an event, sent with the previous attempt's token, writes nothing:
    neither the facts it carries nor the node's last-seen time."""
    first = installing
    fail_attempt(client, clock, first, "failed")
    boot_installer(client)
    clock.advance(minutes=5)
    node_before = client.get(f"/api/v1/nodes/{MAC}").json["data"]
    events_before = rows("node_events")

    late = report(client, {"hostname": "late-host", "ip_address": "10.9.9.9"}, first)

    assert late.status_code == 200, late.json
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"] == node_before
    assert rows("node_events") == events_before


@pytest.mark.parametrize("how", ["failed", "timeout"])
def test_token_two_attempts_old_is_refused(client, clock, installing, snapshot, how):
    """Only one attempt back is remembered; anything older is just a wrong token."""
    first = installing
    fail_attempt(client, clock, first, how)
    second = boot_installer(client)
    fail_attempt(client, clock, second, how)
    third = boot_installer(client)
    before = snapshot()
    rejected = rejected_count()

    oldest = report(client, {"event": "install_complete"}, first)

    assert_refused(oldest)
    assert snapshot() == before
    assert rejected_count() == rejected + 1
    stale = report(client, {"event": "install_complete"}, second)
    assert stale.status_code == 200 and stale.json["data"]["state"] == "installing"
    current = report(client, {"event": "install_complete"}, third)
    assert current.status_code == 200 and current.json["data"]["state"] == "installed"


# -- storage ---------------------------------------------------------------------------------


def database_bytes(app_config: dict) -> bytes:
    """The SQLite file and its journal/WAL, as bytes."""
    path = Path(app_config["DATABASE_URL"].removeprefix("sqlite:///"))
    return b"".join(file.read_bytes() for file in sorted(path.parent.glob(path.name + "*")))


def stored_rows(app) -> str:
    """Every row of every table, as text."""
    with app.app_context():
        return "\n".join(
            repr(tuple(row))
            for table in ("nodes", "node_tags", "node_state_logs", "node_events")
            for row in db.session.execute(text(f"SELECT * FROM {table}"))
        )


@pytest.fixture
def two_tokens(client) -> tuple[str, str]:
    """A token served with the installer (and reported with) and one minted by hand."""
    register(client)
    served = boot_installer(client)
    report(client, {"event": "install_progress", "progress": 10}, served)
    register(client, OTHER_MAC)
    minted = client.post(f"/api/v1/nodes/{OTHER_MAC}/report-token").json["data"]["token"]
    return served, minted


@pytest.mark.parametrize("backend", ["sqlite"])
def test_token_is_stored_only_as_a_hash_in_the_database_file(app_config, two_tokens):
    """The plain token is nowhere in the SQLite files, not even in free pages; its hash is."""
    stored = database_bytes(app_config)

    for token in two_tokens:
        assert token.encode() not in stored
        assert token_hash(token).encode() in stored


def test_token_is_stored_only_as_a_hash(app, client, two_tokens):
    """On every backend: no row holds the plain token, and the API never shows either form."""
    rows_text = stored_rows(app)

    for token in two_tokens:
        assert token not in rows_text
        assert token_hash(token) in rows_text
    for mac in (MAC, OTHER_MAC):
        shown = client.get(f"/api/v1/nodes/{mac}").get_data(as_text=True)
        shown += client.get(f"/api/v1/nodes/{mac}/events").get_data(as_text=True)
        shown += client.get(f"/api/v1/nodes/{mac}/history").get_data(as_text=True)
        assert not any(token in shown or token_hash(token) in shown for token in two_tokens)


# -- minting by hand ------------------------------------------------------------------------


def test_operator_mints_a_token_that_works_for_reports(client, rows):
    """``POST /nodes/<ref>/report-token`` returns a token once; reports may then use it."""
    node = register(client)
    client.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "installing"})

    minted = client.post(f"/api/v1/nodes/{node['id']}/report-token")

    assert minted.status_code == 201, minted.json
    token = minted.json["data"]["token"]
    assert minted.json["data"]["node_id"] == node["id"]
    assert len(token) >= 43
    assert token not in client.get(f"/api/v1/nodes/{MAC}").get_data(as_text=True)
    response = report(client, {"event": "install_complete"}, token, how="header")
    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == "installed"


def test_minting_by_mac_replaces_the_token(client, installing):
    """A new token by MAC address; the one it replaces is only heard as stale."""
    minted = client.post(f"/api/v1/nodes/{MAC}/report-token").json["data"]["token"]

    old = report(client, {"event": "install_complete"}, installing)
    new = report(client, {"event": "install_complete"}, minted)

    assert minted != installing
    assert old.status_code == 200 and old.json["data"]["state"] == "installing"
    assert new.status_code == 200 and new.json["data"]["state"] == "installed"


def test_minting_for_an_unknown_node_is_404(client):
    response = client.post(f"/api/v1/nodes/{UNKNOWN_MAC}/report-token")

    assert response.status_code == 404
    assert response.is_json


# -- open mode -------------------------------------------------------------------------------


@pytest.fixture
def open_client(app_config, monkeypatch):
    """A client of an app in REPORT_AUTH = "open" mode."""
    for name in [key for key in os.environ if key.startswith("PROVISIONER_")]:
        monkeypatch.delenv(name)
    application = create_app(app_config | {"REPORT_AUTH": "open"})
    upgrade_database(application)
    yield application.test_client()
    with application.app_context():
        db.engine.dispose()


def test_open_mode_accepts_reports_without_a_token(open_client):
    """The old behaviour, for existing scripts: the MAC alone is enough."""
    register(open_client)
    boot_installer(open_client)
    rejected = rejected_count()

    response = report(open_client, {"event": "install_complete"})

    assert response.status_code == 200, response.json
    assert response.json["data"]["state"] == "installed"
    assert rejected_count() == rejected


def test_open_mode_still_renders_a_token_for_the_installer(open_client):
    """Switching to token mode later needs no workflow change: the variable is always set."""
    register(open_client)

    token = boot_installer(open_client)

    assert len(token) >= 43

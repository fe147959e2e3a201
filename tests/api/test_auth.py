"""Operator API tokens: the loopback-only default, full and read tokens, and how tokens are kept.

Node-facing endpoints (boot scripts, reports) and the public ones (health, the OpenAPI
document) never need an operator token. Tokens are compared in constant time, may be
configured as ``sha256:<hex>``, and never reach the log.
"""

import hashlib
import hmac
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from apihelpers import client_from
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from serverproc import server_environment
from serverproc import start_server

import provisioner.domain.report_tokens
import provisioner.domain.tokens
from provisioner import create_app
from provisioner.cli import main
from provisioner.config import ConfigError
from provisioner.extensions import db
from provisioner.serve import upgrade_database

API_TOKEN = "api-token-0123456789abcdef"
SECOND_API_TOKEN = "api-token-second-0123456789"
READ_TOKEN = "read-token-0123456789abcdef"
MAC = "52:54:00:a0:00:01"
OTHER_MAC = "52:54:00:a0:00:02"
REMOTE = "192.0.2.7"
PROVISIONER_SCRIPT = Path(sys.executable).parent / "provisioner"


@pytest.fixture
def backend() -> str:
    """Who may call what is decided from the configured tokens before any query: one database
    is enough here (the stores are tested on both elsewhere)."""
    return "sqlite"


def sha256_hex(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def build_app(build_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """conftest's ``build_app``, in report-token mode unless a test says otherwise."""
    return lambda **settings: build_app(**({"REPORT_AUTH": "token"} | settings))


@pytest.fixture
def tokens_app(build_app) -> Flask:
    """Two API tokens and one read token, configured in plain text."""
    return build_app(API_TOKENS=[API_TOKEN, SECOND_API_TOKEN], READ_TOKENS=[READ_TOKEN])


@pytest.fixture
def remote(tokens_app) -> FlaskClient:
    """An operator's client on another machine."""
    return client_from(tokens_app, REMOTE)


@pytest.fixture
def node(remote) -> dict:
    """A node with a tag, made with the full API token."""
    response = remote.post(
        "/api/v1/nodes",
        json={"mac_address": MAC, "workflow_id": "test-os", "tags": ["rack1"]},
        headers=bearer(API_TOKEN),
    )
    assert response.status_code == 201, response.json
    return response.json["data"]


def assert_json_error(response, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    assert response.json["success"] is False
    assert response.json["code"] == status
    assert response.json["message"]


# -- the loopback-only default ---------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1"])
def test_without_tokens_loopback_clients_get_in(build_app, address):
    """With no token configured, the operator API answers this machine, without a token."""
    client = client_from(build_app(), address)

    listed = client.get("/api/v1/nodes")
    created = client.post("/api/v1/nodes", json={"mac_address": MAC})

    assert listed.status_code == 200, listed.json
    assert created.status_code == 201, created.json


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/nodes", None),
        ("get", "/api/v1/events", None),
        ("get", "/api/v1/nodes/stalled", None),
        ("get", "/api/v1/workflows", None),
        ("post", "/api/v1/nodes", {"mac_address": OTHER_MAC}),
        ("patch", f"/api/v1/nodes/{MAC}", {"hostname": "web1"}),
        ("delete", f"/api/v1/nodes/{MAC}", None),
    ],
)
def test_without_tokens_a_remote_client_gets_403_json(build_app, method, path, body):
    """A client on another machine is refused with a message saying how to open the API."""
    application = build_app()
    local = client_from(application)
    assert local.post("/api/v1/nodes", json={"mac_address": MAC}).status_code == 201
    client = client_from(application, REMOTE)

    response = getattr(client, method)(path, json=body)

    assert_json_error(response, 403)
    assert "API_TOKENS" in response.json["message"]
    assert local.get(f"/api/v1/nodes/{MAC}").json["data"]["hostname"] is None
    assert local.get("/api/v1/nodes").json["total"] == 1


def test_without_tokens_a_bearer_token_does_not_open_the_api_to_remote_clients(build_app):
    """Any token is unknown while none is configured: the remote client stays outside."""
    client = client_from(build_app(), REMOTE)

    response = client.get("/api/v1/nodes", headers=bearer(API_TOKEN))

    assert_json_error(response, 403)


def test_without_tokens_machines_on_the_lan_still_boot_and_report(build_app):
    """Node-facing endpoints serve every address, or no machine could ever install."""
    application = build_app(REPORT_AUTH="open")
    client = client_from(application, REMOTE)

    boot = client.get(f"/api/v1/boot?mac={MAC}")
    chain = client.get("/api/v1/ipxe/boot.ipxe")
    report = client.post("/api/v1/report", json={"mac_address": MAC, "event": "boot_started"})

    assert boot.status_code == 200
    assert boot.get_data(as_text=True).startswith("#!ipxe")
    assert "registered" in boot.get_data(as_text=True)
    assert chain.status_code == 200
    assert report.status_code == 200, report.json


# -- API and read tokens --------------------------------------------------------------------


@pytest.mark.parametrize("address", [REMOTE, "127.0.0.1"])
def test_no_token_is_401_json_even_from_loopback(tokens_app, address):
    """Once tokens are configured, loopback is no longer trusted on its own."""
    response = client_from(tokens_app, address).get("/api/v1/nodes")

    assert_json_error(response, 401)
    assert "Authorization: Bearer" in response.json["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-configured-token-123",
        f"Bearer {API_TOKEN}x",
        f"Bearer {API_TOKEN[:-1]}",
        "Bearer ",
        f"Basic {API_TOKEN}",
        API_TOKEN,
        f"Bearer sha256:{sha256_hex(API_TOKEN)}",
        f"Bearer {sha256_hex(API_TOKEN)}",
    ],
    ids=[
        "unknown",
        "longer",
        "shorter",
        "empty",
        "basic-scheme",
        "no-scheme",
        "stored-form",
        "digest",
    ],
)
def test_unknown_token_is_401_json(remote, authorization):
    """Anything but a configured token, including its hash, is refused."""
    response = remote.get("/api/v1/nodes", headers={"Authorization": authorization})

    assert_json_error(response, 401)
    assert "token" in response.json["message"].lower()


@pytest.mark.parametrize("token", [API_TOKEN, SECOND_API_TOKEN])
def test_api_token_reads_and_writes(remote, token):
    """A full API token can list, create, change and delete."""
    headers = bearer(token)

    created = remote.post("/api/v1/nodes", json={"mac_address": MAC}, headers=headers)
    listed = remote.get("/api/v1/nodes", headers=headers)
    changed = remote.patch(f"/api/v1/nodes/{MAC}", json={"hostname": "web1"}, headers=headers)
    moved = remote.patch(f"/api/v1/nodes/{MAC}/state", json={"state": "pending"}, headers=headers)
    tagged = remote.post(f"/api/v1/nodes/{MAC}/tags", json={"tags": ["a"]}, headers=headers)
    deleted = remote.delete(f"/api/v1/nodes/{MAC}", headers=headers)

    assert created.status_code == 201, created.json
    assert listed.status_code == 200 and listed.json["total"] == 1
    assert changed.status_code == 200 and changed.json["data"]["hostname"] == "web1"
    assert moved.status_code == 200 and moved.json["data"]["state"] == "pending"
    assert tagged.status_code == 200 and tagged.json["data"]["tags"] == ["a"]
    assert deleted.status_code == 200, deleted.json


def test_bearer_scheme_is_case_insensitive(remote):
    """``Authorization: bearer <token>`` is the same scheme (RFC 7235)."""
    response = remote.get("/api/v1/nodes", headers={"Authorization": f"bearer {API_TOKEN}"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nodes",
        f"/api/v1/nodes/{MAC}",
        f"/api/v1/nodes/{MAC}/history",
        f"/api/v1/nodes/{MAC}/events",
        "/api/v1/events",
        "/api/v1/nodes/stalled",
        "/api/v1/workflows",
        "/api/v1/workflows/test-os",
    ],
)
def test_read_token_reads(remote, node, path):
    """A read token sees the inventory, the events and the stalled feed."""
    response = remote.get(path, headers=bearer(READ_TOKEN))

    assert response.status_code == 200, response.json
    assert response.json["success"] is True


WRITES = [
    ("post", "/api/v1/nodes", {"mac_address": OTHER_MAC}),
    ("patch", f"/api/v1/nodes/{MAC}", {"hostname": "web1"}),
    ("patch", f"/api/v1/nodes/{MAC}/state", {"state": "pending"}),
    ("post", f"/api/v1/nodes/{MAC}/tags", {"tags": ["rack2"]}),
    ("delete", f"/api/v1/nodes/{MAC}/tags/rack1", None),
    ("post", f"/api/v1/nodes/{MAC}/report-token", None),
    ("delete", f"/api/v1/nodes/{MAC}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_read_token_cannot_write(remote, node, method, path, body):
    """A write with a read token is 403 JSON and changes nothing."""
    before = remote.get("/api/v1/nodes", headers=bearer(API_TOKEN)).json

    response = getattr(remote, method)(path, json=body, headers=bearer(READ_TOKEN))

    assert_json_error(response, 403)
    assert "read token" in response.json["message"].lower()
    assert "token" not in response.json.get("data", {})
    assert remote.get("/api/v1/nodes", headers=bearer(API_TOKEN)).json == before


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_without_a_token_are_401(remote, node, method, path, body):
    """Every write needs a token; nothing changes without one."""
    before = remote.get("/api/v1/nodes", headers=bearer(API_TOKEN)).json

    response = getattr(remote, method)(path, json=body)

    assert_json_error(response, 401)
    assert remote.get("/api/v1/nodes", headers=bearer(API_TOKEN)).json == before


@pytest.mark.parametrize("upper", [False, True], ids=["lower-hex", "upper-hex"])
def test_tokens_configured_as_sha256(build_app, upper):
    """``sha256:<hex>`` entries admit the token whose digest they hold."""

    def stored(token: str) -> str:
        digest = sha256_hex(token)
        return "sha256:" + (digest.upper() if upper else digest)

    application = build_app(API_TOKENS=[stored(API_TOKEN)], READ_TOKENS=[stored(READ_TOKEN)])
    client = client_from(application, REMOTE)

    created = client.post("/api/v1/nodes", json={"mac_address": MAC}, headers=bearer(API_TOKEN))
    read = client.get("/api/v1/nodes", headers=bearer(READ_TOKEN))
    read_write = client.delete(f"/api/v1/nodes/{MAC}", headers=bearer(READ_TOKEN))
    unknown = client.get("/api/v1/nodes", headers=bearer(SECOND_API_TOKEN))
    digest_itself = client.get("/api/v1/nodes", headers=bearer(stored(API_TOKEN)))

    assert created.status_code == 201, created.json
    assert read.status_code == 200 and read.json["total"] == 1
    assert_json_error(read_write, 403)
    assert_json_error(unknown, 401)
    assert_json_error(digest_itself, 401)


def test_api_token_also_works_when_only_read_tokens_are_configured(build_app):
    """READ_TOKENS alone also closes the API: nobody may write, loopback or not."""
    application = build_app(READ_TOKENS=[READ_TOKEN])

    read = client_from(application, REMOTE).get("/api/v1/nodes", headers=bearer(READ_TOKEN))
    write = client_from(application).post("/api/v1/nodes", json={"mac_address": MAC})

    assert read.status_code == 200
    assert_json_error(write, 401)


# -- what needs no operator token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/health", "application/json"),
        ("/api/v1/openapi.json", "application/json"),
        (f"/api/v1/boot?mac={MAC}", "text/plain"),
        ("/api/v1/ipxe/boot.ipxe", "text/plain"),
    ],
)
def test_public_and_node_facing_gets_need_no_operator_token(remote, path, content_type):
    """Health checks, API docs and boot scripts are served to anyone."""
    response = remote.get(path)

    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == content_type


def test_report_needs_no_operator_token(build_app):
    """A node's report is judged by REPORT_AUTH alone, never by operator tokens."""
    application = build_app(API_TOKENS=[API_TOKEN], REPORT_AUTH="open")
    client = client_from(application, REMOTE)
    client.post("/api/v1/nodes", json={"mac_address": MAC}, headers=bearer(API_TOKEN))

    response = client.post("/api/v1/report", json={"mac_address": MAC, "event": "heartbeat"})
    phone_home = client.post(f"/api/v1/nodes/{MAC}/phone-home", data={"hostname": "web1"})
    helper = client.get("/api/v1/report.sh")

    assert response.status_code == 200, response.json
    assert phone_home.status_code == 200, phone_home.get_data(as_text=True)
    assert helper.status_code == 200, helper.get_data(as_text=True)[:300]


def test_report_in_token_mode_is_judged_by_the_report_token_not_the_api_token(remote, node):
    """An operator API token is not a report token."""
    response = remote.post(
        "/api/v1/report",
        json={"mac_address": MAC, "event": "heartbeat"},
        headers=bearer(API_TOKEN),
    )

    assert_json_error(response, 401)
    assert "report token" in response.json["message"].lower()


# -- constant-time comparison ---------------------------------------------------------------


@pytest.fixture
def compared(monkeypatch) -> list[tuple[str, str]]:
    """Every pair ``hmac.compare_digest`` is called with, as the token modules call it."""
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def recording(a, b) -> bool:
        calls.append((a, b))
        return real(a, b)

    for module in (provisioner.domain.tokens, provisioner.domain.report_tokens):
        monkeypatch.setattr(module.hmac, "compare_digest", recording)
    return calls


ALL_DIGESTS = {sha256_hex(token) for token in (API_TOKEN, SECOND_API_TOKEN, READ_TOKEN)}


@pytest.mark.parametrize(
    "token", ["wrong-token-0123456789", API_TOKEN[:-1] + "X", ""], ids=["wrong", "near", "empty"]
)
def test_unknown_token_is_compared_in_constant_time_against_every_digest(remote, compared, token):
    """Every configured digest is compared with ``compare_digest``, none skipped or ``==``."""
    response = remote.get("/api/v1/nodes", headers=bearer(token))

    assert response.status_code == 401
    assert {digest for _, digest in compared} >= ALL_DIGESTS
    presented = sha256_hex(token)
    assert all(candidate == presented for candidate, _ in compared)


@pytest.mark.parametrize("token", [API_TOKEN, SECOND_API_TOKEN])
def test_matching_token_is_compared_with_every_api_digest(remote, compared, token):
    """Finding a match early does not stop the comparison: timing does not tell which."""
    response = remote.get("/api/v1/nodes", headers=bearer(token))

    assert response.status_code == 200
    digests = {digest for _, digest in compared}
    assert digests >= {sha256_hex(API_TOKEN), sha256_hex(SECOND_API_TOKEN)}


def test_read_token_is_compared_in_constant_time(remote, compared):
    response = remote.get("/api/v1/nodes", headers=bearer(READ_TOKEN))

    assert response.status_code == 200
    assert {digest for _, digest in compared} >= ALL_DIGESTS


def test_report_token_is_compared_in_constant_time(remote, node, compared):
    """A report's token is compared with ``compare_digest`` against the node's token hash."""
    minted = remote.post(f"/api/v1/nodes/{MAC}/report-token", headers=bearer(API_TOKEN))
    token = minted.json["data"]["token"]
    compared.clear()

    good = remote.post(
        "/api/v1/report", json={"mac_address": MAC, "event": "heartbeat"}, headers=bearer(token)
    )
    good_calls = list(compared)
    compared.clear()
    bad = remote.post(
        "/api/v1/report",
        json={"mac_address": MAC, "event": "heartbeat"},
        headers=bearer("wrong-report-token-0123456789"),
    )

    assert good.status_code == 200, good.json
    assert (sha256_hex(token), sha256_hex(token)) in good_calls
    assert bad.status_code == 401
    assert compared, "a wrong report token must be compared with compare_digest"


def test_report_for_an_unknown_mac_is_compared_in_constant_time_too(remote, compared):
    """An unknown MAC costs the same comparisons, so timing does not reveal it is unknown."""
    response = remote.post(
        "/api/v1/report",
        json={"mac_address": OTHER_MAC, "event": "heartbeat"},
        headers=bearer("some-report-token-0123456789"),
    )

    assert response.status_code == 401
    assert len(compared) >= 1


# -- tokens stay out of the log, and serve warns when the API is not set up ------------------


@pytest.mark.e2e
def test_tokens_never_appear_in_the_server_log(tmp_path, workflows_dir):
    """Tokens in headers and in ``?token=`` leave no trace in a DEBUG log, good or bad."""
    wrong = "wrong-token-must-not-be-logged-0123"
    with start_server(
        tmp_path,
        LOG_LEVEL="DEBUG",
        WORKFLOWS_DIR=str(workflows_dir),
        API_TOKENS=f"{API_TOKEN},sha256:{sha256_hex(SECOND_API_TOKEN)}",
        READ_TOKENS=READ_TOKEN,
        REPORT_AUTH="token",
    ) as server:
        full = bearer(API_TOKEN)
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}, headers=full).status == 201
        minted = server.post_json(f"/api/v1/nodes/{MAC}/report-token", None, headers=full)
        report_token = minted.body["data"]["token"]
        report = {"mac_address": MAC, "event": "heartbeat"}
        statuses = [
            server.get("/api/v1/nodes", headers=bearer(SECOND_API_TOKEN)).status,
            server.get("/api/v1/events", headers=bearer(READ_TOKEN)).status,
            server.delete(f"/api/v1/nodes/{MAC}", headers=bearer(READ_TOKEN)).status,
            server.get("/api/v1/nodes", headers=bearer(wrong)).status,
            server.get(f"/api/v1/nodes?token={API_TOKEN}", headers=bearer(wrong)).status,
            server.post_json("/api/v1/report", report, headers=bearer(report_token)).status,
            server.post_json(
                "/api/v1/report", report, headers={"X-Report-Token": report_token}
            ).status,
            server.post_json(f"/api/v1/report?token={report_token}", report).status,
            server.post_json(f"/api/v1/report?token={wrong}", report).status,
            server.post_json("/api/v1/report", report, headers={"X-Report-Token": wrong}).status,
            server.post_json("/api/v1/report", {"mac_address": MAC, "event": "x"}).status,
        ]
        exit_code = server.stop()
        log = server.log_text()

    assert statuses == [200, 200, 403, 401, 401, 200, 200, 200, 401, 401, 422]
    assert exit_code == 0, log[-2000:]
    assert "DEBUG" in log or "INFO" in log, "the log must have been written at all"
    for secret in (API_TOKEN, SECOND_API_TOKEN, READ_TOKEN, report_token, wrong):
        assert secret not in log
    assert sha256_hex(report_token) not in log


@pytest.mark.e2e  # starts the real server
def test_serve_warns_when_no_api_token_and_reports_are_open(tmp_path):
    """With nothing configured, serve says the API is loopback-only and reports are open."""
    with start_server(tmp_path, REPORT_AUTH="open") as server:
        exit_code = server.stop()
        log = server.log_text()

    assert exit_code == 0, log[-2000:]
    assert re.search(r"WARN.*no API_TOKENS configured.*loopback", log), log
    assert "provisioner token new" in log
    assert re.search(r'WARN.*REPORT_AUTH = "open"', log), log


@pytest.mark.e2e  # starts the real server
def test_serve_does_not_warn_when_tokens_are_configured(tmp_path):
    with start_server(tmp_path, API_TOKENS=API_TOKEN, REPORT_AUTH="token") as server:
        exit_code = server.stop()
        log = server.log_text()

    assert exit_code == 0, log[-2000:]
    assert "API_TOKENS" not in log
    assert "REPORT_AUTH" not in log


# -- provisioner token new ------------------------------------------------------------------


def run_token_new(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script the way an operator does."""
    return subprocess.run(
        [str(PROVISIONER_SCRIPT), "token", "new", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=server_environment({}),
        timeout=60,
        check=False,
    )


def test_token_new_in_process_prints_a_token_and_the_line_that_lets_it_in(build_app):
    """The same command run in-process (its console-script runs below are slow-marked)."""
    output = CliRunner().invoke(main, ["token", "new"], catch_exceptions=False).output
    token = re.search(r"^token: (\S+)$", output, re.MULTILINE).group(1)
    stored = re.search(r'^API_TOKENS = \["(sha256:[0-9a-f]{64})"\]$', output, re.M).group(1)
    assert stored == "sha256:" + sha256_hex(token)
    client = client_from(build_app(API_TOKENS=[stored]), REMOTE)
    assert client.get("/api/v1/nodes", headers=bearer(token)).status_code == 200


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
@pytest.mark.parametrize(("args", "key"), [((), "API_TOKENS"), (("--read-only",), "READ_TOKENS")])
def test_token_new_prints_a_token_and_its_config_line(tmp_path, args, key):
    """The printed config line holds the digest of the printed token, never the token."""
    result = run_token_new(tmp_path, *args)

    assert result.returncode == 0, result.stderr
    token_line = re.search(r"^token: (\S+)$", result.stdout, re.MULTILINE)
    config_line = re.search(rf'^{key} = \["sha256:([0-9a-f]{{64}})"\]$', result.stdout, re.M)
    assert token_line and config_line, result.stdout
    token = token_line.group(1)
    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert config_line.group(1) == sha256_hex(token)
    assert token not in config_line.group(0)
    other_key = "READ_TOKENS" if key == "API_TOKENS" else "API_TOKENS"
    assert other_key not in result.stdout


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_token_new_prints_a_different_token_each_time(tmp_path):
    first = run_token_new(tmp_path).stdout
    second = run_token_new(tmp_path).stdout

    assert first != second


@pytest.mark.slow  # runs `provisioner` in a subprocess (make test)
def test_token_new_output_configures_a_working_server(tmp_path, build_app):
    """The line it prints, pasted into the config, lets the printed token in."""
    output = run_token_new(tmp_path).stdout
    token = re.search(r"^token: (\S+)$", output, re.MULTILINE).group(1)
    stored = re.search(r'^API_TOKENS = \["(sha256:[0-9a-f]{64})"\]$', output, re.M).group(1)
    client = client_from(build_app(API_TOKENS=[stored]), REMOTE)

    assert client.get("/api/v1/nodes", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/nodes", headers=bearer(stored)).status_code == 401


# -- bad token configuration ----------------------------------------------------------------

SECRET_LOOKING = "Secr3t-value-that-must-not-be-echoed"


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("key", ["API_TOKENS", "READ_TOKENS"])
@pytest.mark.parametrize("value", [[SECRET_LOOKING, 12345]], ids=["not-a-string"])
def test_bad_token_config_is_a_config_error_naming_the_key_but_not_the_value(
    app_config, key, value
):
    """A bad entry stops start-up with the key named and the value (a secret) not echoed.
    Every kind of bad entry, on the settings alone: tests/unit/test_token_config.py."""
    with pytest.raises(ConfigError) as excinfo:
        create_app(app_config | {key: value})

    message = str(excinfo.value)
    assert key in message
    for item in value if isinstance(value, list) else [value["token"]]:
        if isinstance(item, str) and item:
            assert item not in message
            assert item.removeprefix("sha256:") not in message
    assert "Secr3t" not in message


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_token_in_the_environment_is_not_echoed(app_config, monkeypatch):
    """``PROVISIONER_API_TOKENS`` is checked the same way as the file and test settings."""
    monkeypatch.setenv("PROVISIONER_API_TOKENS", f"{API_TOKEN},short-Secr3t")

    with pytest.raises(ConfigError) as excinfo:
        create_app({key: value for key, value in app_config.items() if key != "API_TOKENS"})

    assert "API_TOKENS" in str(excinfo.value)
    assert "Secr3t" not in str(excinfo.value)
    assert API_TOKEN not in str(excinfo.value)


def test_comma_separated_tokens_from_the_environment_work(app_config, monkeypatch):
    monkeypatch.setenv("PROVISIONER_API_TOKENS", f"{API_TOKEN}, sha256:{sha256_hex(READ_TOKEN)}")
    application = create_app(app_config)
    upgrade_database(application)
    try:
        client = client_from(application, REMOTE)
        first = client.get("/api/v1/nodes", headers=bearer(API_TOKEN))
        second = client.get("/api/v1/nodes", headers=bearer(READ_TOKEN))
    finally:
        with application.app_context():
            db.engine.dispose()

    assert first.status_code == second.status_code == 200

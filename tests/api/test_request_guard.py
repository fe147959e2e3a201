"""Requests a browser can be made to send: DNS rebinding, cross-site writes, proxied callers.

With no operator token the operator API trusts loopback clients, the operator's browser among
them. ``Host`` must be a name the server answers to, a write another site started is refused
(``Sec-Fetch-Site``, else ``Origin``), API writes must be JSON, and a request that came
through a proxy the server does not read is refused instead of passing as loopback. Machines
(no browser headers, any ``Host``) are not affected.
"""

import socket

import pytest
from apihelpers import client_from
from flask import Flask

from provisioner.extensions import db
from provisioner.models import Node

MAC = "52:54:00:b0:00:01"
FOREIGN_ORIGIN = "http://attacker.example"
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": FOREIGN_ORIGIN}
#: What a browser sends for an HTML form another site submits (no Sec-Fetch-Site: an older
#: browser, or one that leaves it out).
FOREIGN_FORM = {"Origin": FOREIGN_ORIGIN}


@pytest.fixture
def backend() -> str:
    """The guard decides from the request before any query: one database is enough here (the
    stores are tested on both elsewhere)."""
    return "sqlite"


def make_node(client, **fields) -> dict:
    response = client.post("/api/v1/nodes", json={"mac_address": MAC} | fields)
    assert response.status_code == 201, response.json
    return response.json["data"]


def token_hash(app: Flask, node_id: int) -> str | None:
    with app.app_context():
        return db.session.get(Node, node_id).report_token_hash


def assert_refused(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    assert response.json["success"] is False
    for word in words:
        assert word in response.json["message"], response.json


# -- Host ---------------------------------------------------------------------------------------


def test_rebound_host_cannot_read_the_operator_api(client):
    """A page on a DNS name rebound to 127.0.0.1 gets 400 naming ALLOWED_HOSTS, not the nodes."""
    make_node(client)

    response = client.get("/api/v1/nodes", headers={"Host": "rebind.attacker.example:8080"})

    assert_refused(response, 400, "ALLOWED_HOSTS", "rebind.attacker.example")
    assert MAC not in response.get_data(as_text=True)


@pytest.mark.parametrize("host", ["", "a b", "[::1", "127.0.0.1:99999"])
def test_malformed_host_is_refused(client, host):
    assert_refused(client.get("/api/v1/nodes", headers={"Host": host}), 400, "Host")


def test_rebound_host_cannot_open_the_dashboard(client):
    response = client.get("/", headers={"Host": "rebind.attacker.example"})
    assert response.status_code == 400
    assert "ALLOWED_HOSTS" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8080",
        "[::1]:8080",
        "localhost",
        "LOCALHOST:8080",
        "10.1.2.3:8080",
        "[fe80::1]",
        "prov.test:8080",  # SERVER_URL's host (conftest)
        socket.gethostname(),
    ],
)
def test_default_hosts_are_answered(client, host):
    """IP literals (no DNS, no rebinding), localhost, this machine's name and SERVER_URL's."""
    response = client.get("/api/v1/nodes", headers={"Host": host})
    assert response.status_code == 200, response.json


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        (["provisioner.lab"], "provisioner.lab:8080", 200),
        (["provisioner.lab"], "other.lab", 400),
        ([".lab.example"], "a.b.lab.example", 200),
        ([".lab.example"], "lab.example", 200),
        ([".lab.example"], "evil-lab.example", 400),
        (["*"], "anything.example", 200),
    ],
)
def test_allowed_hosts_adds_names(build_app, allowed, host, status):
    client = build_app(ALLOWED_HOSTS=allowed).test_client()
    assert client.get("/api/v1/nodes", headers={"Host": host}).status_code == status


def test_node_facing_endpoints_answer_any_host(client):
    """Machines reach boot and report by whatever name DHCP/iPXE gives them: never refused."""
    host = {"Host": "pxe-alias.lab.example"}
    make_node(client)

    boot = client.get("/api/v1/boot", query_string={"mac": MAC}, headers=host)
    report = client.post(
        "/api/v1/report", json={"mac_address": MAC, "event": "heartbeat"}, headers=host
    )

    assert boot.status_code == 200
    assert boot.get_data(as_text=True).startswith("#!ipxe")
    assert report.status_code == 200, report.json


def test_with_operator_tokens_any_host_is_answered(build_app):
    """A rebound page has no token; load balancers and scrapers may use any name."""
    token = "guard-api-token-0123456789abcdef"
    client = build_app(API_TOKENS=[token]).test_client()
    headers = {"Host": "lb-name.example", "Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/nodes", headers=headers).status_code == 200
    assert client.get("/health", headers={"Host": "lb-name.example"}).status_code == 200


# -- cross-site writes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [CROSS_SITE, {"Sec-Fetch-Site": "same-site"}, FOREIGN_FORM, {"Origin": "null"}, {}],
    ids=["sec-fetch-cross-site", "sec-fetch-same-site", "origin-only", "origin-null", "bare"],
)
def test_form_from_another_site_cannot_mint_a_report_token(app, client, headers):
    """The HTML form another page could submit to 127.0.0.1 used to mint a report token (201).

    Refused by the browser's own headers, and, where it sends none, because it is a form.
    """
    node = make_node(client)
    before = token_hash(app, node["id"])

    response = client.post(
        f"/api/v1/nodes/{node['id']}/report-token",
        data={"anything": "x"},
        content_type="application/x-www-form-urlencoded",
        headers=headers,
    )

    assert response.status_code in (403, 422), response.json
    assert "token" not in response.json.get("data", {})
    assert token_hash(app, node["id"]) == before


def test_cross_site_refusal_names_the_header(client):
    node = make_node(client)
    response = client.post(f"/api/v1/nodes/{node['id']}/report-token", headers=CROSS_SITE)
    assert_refused(response, 403, "Cross-site", "Sec-Fetch-Site")


def test_foreign_origin_refusal_names_the_origin(client):
    node = make_node(client)
    response = client.post(f"/api/v1/nodes/{node['id']}/report-token", headers=FOREIGN_FORM)
    assert_refused(response, 403, "Cross-site", FOREIGN_ORIGIN)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/nodes", {"mac_address": "52:54:00:b0:00:02"}),
        ("PATCH", "/api/v1/nodes/{id}", {"hostname": "renamed"}),
        ("PATCH", "/api/v1/nodes/{id}/state", {"state": "retired"}),
        ("POST", "/api/v1/nodes/{id}/tags", {"tags": ["x"]}),
        ("DELETE", "/api/v1/nodes/{id}", None),
        ("POST", "/api/v1/report", {"mac_address": MAC, "event": "heartbeat"}),
    ],
)
@pytest.mark.parametrize("headers", [CROSS_SITE, FOREIGN_FORM], ids=["sec-fetch", "origin-only"])
def test_every_write_refuses_a_cross_site_request(client, method, path, body, headers):
    """Even a JSON write (a fetch() another page makes) is refused when a browser says so."""
    node = make_node(client)
    response = client.open(path.format(id=node["id"]), method=method, json=body, headers=headers)
    assert_refused(response, 403, "Cross-site")
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"] == node


@pytest.mark.parametrize(
    ("host", "headers"),
    [
        ("localhost", {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}),
        ("127.0.0.1:8080", {"Origin": "http://127.0.0.1:8080"}),
        ("prov.test", {"Origin": "https://prov.test"}),  # TLS ended by a proxy in front
        ("localhost", {"Sec-Fetch-Site": "none"}),
        ("localhost", {}),  # curl, scripts, the CLI: no browser headers
    ],
)
def test_same_origin_and_non_browser_writes_are_accepted(client, host, headers):
    response = client.post(
        "/api/v1/nodes", json={"mac_address": MAC}, headers={"Host": host} | headers
    )
    assert response.status_code == 201, response.json


def test_cross_site_get_of_the_boot_endpoint_changes_nothing(client):
    """Serving an installer moves a node, so an <img> on another page must not trigger it."""
    node = make_node(client, workflow_id="test-os")
    client.patch(f"/api/v1/nodes/{node['id']}/state", json={"state": "pending"})

    response = client.get(
        "/api/v1/boot", query_string={"mac": MAC}, headers={"Sec-Fetch-Site": "cross-site"}
    )

    assert response.status_code == 403
    assert client.get(f"/api/v1/nodes/{node['id']}").json["data"]["state"] == "pending"


def test_a_link_from_another_site_still_opens_the_dashboard(client):
    """Reading is not a change: a wiki's link to a dashboard page works."""
    response = client.get(
        "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    )
    assert response.status_code == 200


# -- JSON only ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", "state=retired"),
        ("multipart/form-data; boundary=x", "--x--\r\n"),
        ("text/plain", '{"state": "retired"}'),
        ("application/x-www-form-urlencoded", ""),
    ],
)
def test_api_writes_refuse_bodies_that_are_not_json(client, content_type, data):
    """Endpoints that read no body (mint a token, delete) refuse a form as the others do."""
    node = make_node(client)
    for path, method in [
        (f"/api/v1/nodes/{node['id']}/report-token", "POST"),
        (f"/api/v1/nodes/{node['id']}", "DELETE"),
    ]:
        response = client.open(path, method=method, data=data, content_type=content_type)
        assert_refused(response, 422, "Content-Type: application/json")
        assert "body" in response.json["errors"]
    assert client.get(f"/api/v1/nodes/{node['id']}").status_code == 200


def test_api_writes_without_a_body_need_no_content_type(client):
    """``curl -X POST`` / ``-X DELETE`` keep working."""
    node = make_node(client)
    minted = client.post(f"/api/v1/nodes/{node['id']}/report-token")
    deleted = client.delete(f"/api/v1/nodes/{node['id']}")
    assert minted.status_code == 201, minted.json
    assert deleted.status_code == 200, deleted.json


# -- proxies in loopback-only mode --------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "192.0.2.7"},
        {"Forwarded": "for=192.0.2.7"},
        {"X-Real-IP": "192.0.2.7"},
    ],
)
def test_proxied_operator_call_is_refused_when_no_proxy_is_trusted(client, header):
    """A proxy on this host makes every client loopback; its header gives it away."""
    response = client.get("/api/v1/nodes", headers=header)
    assert_refused(response, 403, "TRUSTED_PROXIES", next(iter(header)))


def test_proxied_dashboard_is_refused_when_no_proxy_is_trusted(client):
    response = client.get("/", headers={"X-Forwarded-For": "192.0.2.7"})
    assert response.status_code == 403
    assert "TRUSTED_PROXIES" in response.get_data(as_text=True)


def test_proxied_node_calls_still_work_when_no_proxy_is_trusted(client):
    make_node(client)
    response = client.get(
        "/api/v1/boot", query_string={"mac": MAC}, headers={"X-Forwarded-For": "192.0.2.7"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [("127.0.0.1", 200), ("192.0.2.7", 403), ("127.0.0.1, 192.0.2.7", 403)],
)
def test_trusted_proxy_passes_on_the_real_client(build_app, forwarded_for, status):
    """With TRUSTED_PROXIES = 1 the proxy's last hop decides, not the proxy's own address."""
    client = client_from(build_app(TRUSTED_PROXIES=1), "127.0.0.1")
    response = client.get("/api/v1/nodes", headers={"X-Forwarded-For": forwarded_for})
    assert response.status_code == status, response.json


def test_trusted_proxy_must_send_x_forwarded_for(build_app):
    """TRUSTED_PROXIES reads X-Forwarded-For only; a proxy sending Forwarded alone is refused."""
    client = client_from(build_app(TRUSTED_PROXIES=1), "127.0.0.1")
    response = client.get("/api/v1/nodes", headers={"Forwarded": "for=192.0.2.7"})
    assert_refused(response, 403, "X-Forwarded-For")

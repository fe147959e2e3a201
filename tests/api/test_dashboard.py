"""The web dashboard through Flask's test client: pages, filters, buttons and access rules.

Nodes are set up through the JSON API, as an operator's script would; the dashboard is then
read and clicked as a browser would (forms with the CSRF field taken from the page).
"""

import hashlib
import logging
import re

import pytest
from apihelpers import client_from
from flask import Flask
from flask.testing import FlaskClient

from provisioner.extensions import db

MAC = "52:54:00:d0:00:01"
OTHER_MAC = "52:54:00:d0:00:02"
THIRD_MAC = "52:54:00:e1:00:03"
API_TOKEN = "dashboard-api-token-0123456789"
READ_TOKEN = "dashboard-read-token-0123456789"
REMOTE = "192.0.2.50"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def html(response) -> str:
    return response.get_data(as_text=True)


def csrf_from(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on ``path``, as a browser would submit it."""
    page = client.get(path)
    found = CSRF.search(html(page))
    assert found, (page.status_code, html(page)[:500])
    return found.group(1)


def press(client: FlaskClient, path: str, **fields: str):
    """Submit a node page's form (``/nodes/<id>/<action>``) and follow the redirect."""
    data = {"csrf_token": csrf_from(client, path.rsplit("/", 1)[0])} | fields
    return client.post(path, data=data, follow_redirects=True)


def api_node(client: FlaskClient, mac: str = MAC, **fields) -> dict:
    """Register a node through the API and return it."""
    created = client.post("/api/v1/nodes", json={"mac_address": mac} | fields)
    assert created.status_code == 201, created.json
    return created.json["data"]


def installing_node(client: FlaskClient, mac: str = MAC, progress: int = 40, **fields) -> dict:
    """A node moved through the API into ``installing``, with one progress report."""
    node = api_node(client, mac, workflow_id="test-os", **fields)
    for state in ("pending", "installing"):
        moved = client.patch(f"/api/v1/nodes/{mac}/state", json={"state": state})
        assert moved.status_code == 200, moved.json
    report = {"mac_address": mac, "event": "install_progress", "progress": progress}
    assert client.post("/api/v1/report", json=report).status_code == 200
    return node


def node_state(client: FlaskClient, mac: str = MAC) -> str:
    return client.get(f"/api/v1/nodes/{mac}").json["data"]["state"]


def row_of(page: str, node_id: str) -> str:
    """The nodes-table row of one node."""
    start = page.index(f'data-node="{node_id}"')
    return page[start : page.index("</tr>", start)]


# -- pages -------------------------------------------------------------------------------------


def test_nodes_page_lists_every_node_with_its_facts(client):
    """MAC, hostname, state badge, workflow and tags, each node linking to its page."""
    node = api_node(client, hostname="web1", workflow_id="test-os", tags=["rack1"])

    page = html(client.get("/"))

    row = row_of(page, node["id"])
    assert MAC in row and "web1" in row and "test-os" in row
    assert 'class="badge state-discovered"' in row
    assert f'href="/nodes/{node["id"]}"' in row
    assert 'href="/?tag=rack1"' in row
    assert "<progress" not in row


def test_installing_node_shows_a_progress_bar(client):
    """Only installing nodes get a bar, at the progress last reported."""
    installing = installing_node(client, progress=40)
    idle = api_node(client, OTHER_MAC)

    page = html(client.get("/"))

    assert '<progress max="100" value="40">' in row_of(page, installing["id"])
    assert "<progress" not in row_of(page, idle["id"])


def test_attempts_and_last_seen(client, clock):
    """Failed attempts read as 1/3 and the last report as "3 min ago"."""
    node = installing_node(client)
    failed = {"mac_address": MAC, "event": "install_failed", "message": "disk full"}
    assert client.post("/api/v1/report", json=failed).json["data"]["state"] == "pending"
    clock.advance(minutes=3)

    row = row_of(html(client.get("/")), node["id"])

    assert ">1/3<" in row
    assert "3 min ago" in row


def test_filter_by_state_and_tag(client):
    """The state and tag filters narrow the table; an unknown state is ignored."""
    installing_node(client, tags=["rack1"])
    api_node(client, OTHER_MAC, tags=["rack2"])

    by_state = html(client.get("/?state=installing"))
    by_tag = html(client.get("/?tag=rack2"))
    unknown = html(client.get("/?state=bogus"))

    assert MAC in by_state and OTHER_MAC not in by_state
    assert OTHER_MAC in by_tag and MAC not in by_tag
    assert MAC in unknown and OTHER_MAC in unknown


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("d0:00:01", MAC),
        ("52-54-00-E1", THIRD_MAC),
        ("WEB", OTHER_MAC),
        ("db-0", MAC),
    ],
)
def test_search_by_mac_or_hostname(client, query, found):
    """Search matches part of a MAC (any separator, any case) or of a hostname."""
    api_node(client, MAC, hostname="db-01")
    api_node(client, OTHER_MAC, hostname="web-01")
    api_node(client, THIRD_MAC)

    table = html(client.get("/", query_string={"q": query})).split("<table")[1]

    shown = {mac for mac in (MAC, OTHER_MAC, THIRD_MAC) if mac in table}
    assert shown == {found}


def test_search_treats_like_wildcards_literally(client):
    """``%`` and ``_`` in a search are characters, not patterns."""
    api_node(client, MAC, hostname="web1")

    table = html(client.get("/?q=%25")).split("<table")[1]

    assert MAC not in table
    assert "No nodes match." in table


def test_stalled_banner_and_page(client, clock):
    """A stalled install shows a banner with its count and a link to the feed."""
    node = installing_node(client)
    clock.advance(minutes=61)  # INSTALL_TIMEOUT_MINUTES defaults to 60

    index = html(client.get("/"))
    stalled = html(client.get("/stalled"))

    assert "1 stalled install" in index
    assert 'href="/stalled"' in index.split('class="banner"')[1]
    row = stalled[stalled.index(f'data-node="{node["id"]}"') :]
    assert "install timeout" in row.split("</tr>")[0]
    assert "<td>1 min</td>" in row.split("</tr>")[0]


def test_no_banner_when_nothing_is_stalled(client):
    installing_node(client)

    assert 'class="banner"' not in html(client.get("/"))
    assert "Nothing is stalled." in html(client.get("/stalled"))


def test_node_page_timeline_is_newest_first_with_metadata(client):
    """Events newest first with status, progress and effect; metadata behind <details>."""
    node = installing_node(client, progress=10)
    report = {
        "mac_address": MAC,
        "event": "install_progress",
        "progress": 70,
        "event_metadata": {"step": "packages"},
    }
    client.post("/api/v1/report", json=report)
    client.post("/api/v1/report", json={"mac_address": MAC, "event": "first_boot"})

    page = html(client.get(f"/nodes/{node['id']}"))

    timeline = page[page.index('class="timeline"') :]
    assert timeline.index("first boot") < timeline.index("70%") < timeline.index("10%")
    assert "status-success" in timeline
    assert "→ ignored" in timeline  # first_boot while installing: recorded, its effect says so
    assert "→ progress 70%" in timeline
    metadata = timeline.index("&#34;step&#34;: &#34;packages&#34;")
    assert timeline.rindex("<details", 0, metadata) > timeline.rindex("</details>", 0, metadata)


def test_node_page_shows_state_history_newest_first(client):
    node = installing_node(client)

    page = html(client.get(f"/nodes/{node['id']}"))

    history = page[page.index('class="history"') :]
    assert history.index("state-installing") < history.index("state-discovered")
    assert "registered by operator" in history


def test_node_page_by_mac_and_unknown_node(client):
    """A MAC works as the reference too; an unknown node is a 404 page, not JSON."""
    api_node(client, hostname="web1")

    by_mac = client.get(f"/nodes/{MAC}")
    missing = client.get("/nodes/no-such-node")

    assert by_mac.status_code == 200 and "web1" in html(by_mac)
    assert missing.status_code == 404
    assert missing.mimetype == "text/html"
    assert "not found" in html(missing)


def test_fragments_hold_only_the_live_parts(client):
    """What the page script polls: the table, the node's facts and timeline, the feed."""
    node = installing_node(client, progress=55)

    nodes = client.get("/fragments/nodes?state=installing")
    one = client.get(f"/fragments/nodes/{node['id']}")
    stalled = client.get("/fragments/stalled")

    for response in (nodes, one, stalled):
        assert response.status_code == 200
        assert "<html" not in html(response)
    assert '<progress max="100" value="55">' in html(nodes)
    assert '<progress max="100" value="55">' in html(one)
    assert 'class="timeline"' in html(one)


def test_pages_are_live_and_work_without_javascript(client):
    """Each page names its fragment for live.js, and holds the same content itself."""
    node = installing_node(client)

    index = html(client.get("/?state=installing"))
    page = html(client.get(f"/nodes/{node['id']}"))
    script = client.get("/dashboard/static/live.js")

    assert 'data-live-url="/fragments/nodes?state=installing"' in index
    assert f'data-live-url="/fragments/nodes/{node["id"]}"' in page
    assert '<progress max="100" value="40">' in index
    assert script.status_code == 200
    assert "data-live-url" in html(script)


def test_pages_send_security_headers(client):
    response = client.get("/")

    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


# -- buttons -----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["missing", "wrong"])
def test_post_without_the_right_csrf_token_is_refused(client, token):
    """A form without this session's CSRF token changes nothing."""
    node = api_node(client)
    csrf_from(client, f"/nodes/{node['id']}")  # the session has a token; the form lacks it
    data = {"state": "pending"} | ({"csrf_token": token} if token else {})

    response = client.post(f"/nodes/{node['id']}/state", data=data)

    assert response.status_code == 400
    assert "CSRF" in html(response)
    assert node_state(client) == "discovered"


def test_csrf_token_of_another_session_is_refused(app, client):
    node = api_node(client)
    other = app.test_client()
    foreign = csrf_from(other, f"/nodes/{node['id']}")
    csrf_from(client, f"/nodes/{node['id']}")

    response = client.post(
        f"/nodes/{node['id']}/state", data={"state": "pending", "csrf_token": foreign}
    )

    assert response.status_code == 400
    assert node_state(client) == "discovered"


def test_start_install_moves_the_node_to_pending(client):
    """The button goes through the lifecycle: state log entry by admin, message shown."""
    node = api_node(client, workflow_id="test-os")

    response = press(client, f"/nodes/{node['id']}/state", state="pending")

    assert response.status_code == 200
    assert "State changed from discovered to pending" in html(response)
    assert node_state(client) == "pending"
    last = client.get(f"/api/v1/nodes/{MAC}/history").json["data"][-1]
    assert (last["to_state"], last["triggered_by"]) == ("pending", "admin")
    assert last["comment"] == "from the dashboard"


def test_retire_and_reprovision(client):
    node = api_node(client)
    path = f"/nodes/{node['id']}/state"

    press(client, path, state="pending")
    press(client, path, state="retired")

    assert node_state(client) == "retired"


def test_illegal_transition_shows_the_message_and_valid_moves(client):
    """Refused like the API (409 there): the message names the valid transitions."""
    node = api_node(client)

    response = press(client, f"/nodes/{node['id']}/state", state="reprovision")

    assert "Cannot move node from discovered to reprovision" in html(response)
    assert "Valid transitions from discovered: pending, retired." in html(response)
    assert node_state(client) == "discovered"


def test_moving_a_retired_node_says_retired_is_final(client):
    node = api_node(client)
    press(client, f"/nodes/{node['id']}/state", state="retired")

    response = press(client, f"/nodes/{node['id']}/state", state="pending")

    assert "Cannot move node from retired to pending" in html(response)
    assert "none (retired is final)" in html(response)


def test_unknown_state_is_refused_with_the_schema_message(client):
    node = api_node(client)

    response = press(client, f"/nodes/{node['id']}/state", state="flying")

    assert "Invalid request: state: Must be one of" in html(response)
    assert node_state(client) == "discovered"


def test_set_workflow(client):
    node = api_node(client)
    path = f"/nodes/{node['id']}/workflow"

    set_response = press(client, path, workflow_id="test-os")
    after_set = client.get(f"/api/v1/nodes/{MAC}").json["data"]["workflow_id"]
    press(client, path, workflow_id="")
    after_clear = client.get(f"/api/v1/nodes/{MAC}").json["data"]["workflow_id"]

    assert "Workflow set to test-os" in html(set_response)
    assert (after_set, after_clear) == ("test-os", None)


@pytest.mark.parametrize(
    ("workflow", "message"),
    [("no-such-os", "Unknown workflow &#39;no-such-os&#39;"), ("../etc", "workflow_id:")],
)
def test_set_workflow_refusal_shows_the_api_message(client, workflow, message):
    node = api_node(client)

    response = press(client, f"/nodes/{node['id']}/workflow", workflow_id=workflow)

    assert message in html(response)
    assert client.get(f"/api/v1/nodes/{MAC}").json["data"]["workflow_id"] is None


def test_minted_report_token_is_shown_once_and_works(client):
    """The token appears in the response to the button only; reports accept it."""
    node = api_node(client)

    response = client.post(
        f"/nodes/{node['id']}/report-token",
        data={"csrf_token": csrf_from(client, f"/nodes/{node['id']}")},
    )
    token = re.search(r'id="minted-token">([^<]+)<', html(response)).group(1)
    later = html(client.get(f"/nodes/{node['id']}"))

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert len(token) >= 40
    assert token not in later
    with client.application.app_context():
        from provisioner.models import Node

        stored = db.session.get(Node, node["id"]).report_token_hash
    assert stored == hashlib.sha256(token.encode()).hexdigest()


def test_buttons_on_an_unknown_node_are_404(client):
    node = api_node(client)
    token = csrf_from(client, f"/nodes/{node['id']}")

    response = client.post("/nodes/nope/state", data={"csrf_token": token, "state": "pending"})

    assert response.status_code == 404


# -- access --------------------------------------------------------------------------------------


@pytest.fixture
def tokens_app(build_app) -> Flask:
    return build_app(API_TOKENS=[API_TOKEN], READ_TOKENS=[READ_TOKEN], SECRET_KEY="k" * 32)


def bearer(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def log_in(client: FlaskClient, token: str, next_path: str = "/"):
    """Submit the login form; return the (unfollowed) response."""
    return client.post(
        "/login",
        data={"csrf_token": csrf_from(client, "/login"), "token": token, "next": next_path},
    )


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_without_tokens_loopback_sees_everything(build_app, address):
    """The default: this machine needs no login and gets every button."""
    client = client_from(build_app(), address)
    node = api_node(client)

    page = client.get(f"/nodes/{node['id']}")

    assert page.status_code == 200
    assert 'action="/nodes/' in html(page) and "Retire" in html(page)
    assert client.get("/login").status_code == 303


def test_without_tokens_remote_clients_are_refused(build_app):
    """Another machine gets a 403 page saying how to open the dashboard up."""
    application = build_app()
    node = api_node(client_from(application))
    remote = client_from(application, REMOTE)

    page = remote.get("/")
    detail = remote.get(f"/nodes/{node['id']}")
    post = remote.post(f"/nodes/{node['id']}/state", data={"state": "retired"})

    for response in (page, detail, post):
        assert response.status_code == 403
        assert response.mimetype == "text/html"
        assert "API_TOKENS" in html(response)
    assert node_state(client_from(application)) == "discovered"


@pytest.mark.parametrize("address", ["127.0.0.1", REMOTE])
def test_with_tokens_pages_redirect_to_login(tokens_app, address):
    """Once tokens are configured, loopback is not enough: every page wants a login."""
    client = client_from(tokens_app, address)

    index = client.get("/")
    node = client.get("/nodes/x?tab=1")
    stalled = client.get("/stalled")
    fragment = client.get("/fragments/nodes")

    assert index.status_code == 303 and index.location == "/login?next=/"
    assert node.location == "/login?next=/nodes/x?tab%3D1"
    assert stalled.location == "/login?next=/stalled"
    assert fragment.status_code == 401


def test_with_tokens_post_without_login_changes_nothing(tokens_app):
    client = client_from(tokens_app, REMOTE)
    created = client.post("/api/v1/nodes", json={"mac_address": MAC}, headers=bearer())
    node_id = created.json["data"]["id"]

    response = client.post(f"/nodes/{node_id}/state", data={"state": "retired"})

    assert response.status_code == 303
    assert response.location.startswith("/login")
    assert client.get(f"/api/v1/nodes/{MAC}", headers=bearer()).json["data"]["state"] == (
        "discovered"
    )


def test_login_page_and_static_files_are_public(tokens_app):
    client = client_from(tokens_app, REMOTE)

    login = client.get("/login")
    css = client.get("/dashboard/static/dashboard.css")

    assert login.status_code == 200 and 'name="token"' in html(login)
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_unknown_token_does_not_log_in(tokens_app):
    client = client_from(tokens_app, REMOTE)

    response = log_in(client, "not-a-configured-token-0123")

    assert response.status_code == 401
    assert "Unknown token" in html(response)
    assert client.get("/").status_code == 303


def test_login_needs_the_csrf_token(tokens_app):
    """Login CSRF: a foreign site cannot log the browser into the operator's session."""
    client = client_from(tokens_app, REMOTE)

    response = client.post("/login", data={"token": API_TOKEN})

    assert response.status_code == 400
    assert client.get("/").status_code == 303


def test_api_token_login_sees_and_uses_the_buttons(tokens_app):
    """The session cookie is signed, HttpOnly and SameSite=Lax; buttons work."""
    client = client_from(tokens_app, REMOTE)
    created = client.post("/api/v1/nodes", json={"mac_address": MAC}, headers=bearer())
    node_id = created.json["data"]["id"]

    response = log_in(client, API_TOKEN, f"/nodes/{node_id}")
    cookie = response.headers["Set-Cookie"]
    page = client.get(response.location)
    moved = press(client, f"/nodes/{node_id}/state", state="pending")

    assert response.status_code == 303 and response.location == f"/nodes/{node_id}"
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert API_TOKEN not in cookie
    assert "Retire" in html(page) and "Log out" in html(page)
    assert "State changed from discovered to pending" in html(moved)


def test_sha256_configured_token_logs_in(build_app):
    digest = hashlib.sha256(API_TOKEN.encode()).hexdigest()
    client = client_from(build_app(API_TOKENS=[f"sha256:{digest}"]), REMOTE)

    assert log_in(client, API_TOKEN).status_code == 303
    assert client.get("/").status_code == 200


def test_read_token_sees_no_buttons_and_cannot_post(tokens_app):
    client = client_from(tokens_app, REMOTE)
    created = client.post("/api/v1/nodes", json={"mac_address": MAC}, headers=bearer())
    node_id = created.json["data"]["id"]

    assert log_in(client, READ_TOKEN).status_code == 303
    page = client.get(f"/nodes/{node_id}")
    token = csrf_from(client, f"/nodes/{node_id}")  # the logout form's field
    refused = [
        client.post(f"/nodes/{node_id}/state", data={"csrf_token": token, "state": "retired"}),
        client.post(f"/nodes/{node_id}/report-token", data={"csrf_token": token}),
        client.post(f"/nodes/{node_id}/workflow", data={"csrf_token": token}),
    ]

    assert page.status_code == 200 and MAC in html(page)
    assert f'action="/nodes/{node_id}/' not in html(page)
    assert "Read-only access" in html(page)
    assert [response.status_code for response in refused] == [403, 403, 403]
    assert "read token" in html(refused[0])
    node = client.get(f"/api/v1/nodes/{MAC}", headers=bearer()).json["data"]
    assert node["state"] == "discovered"


def test_logout_ends_the_session(tokens_app):
    client = client_from(tokens_app, REMOTE)
    log_in(client, READ_TOKEN)

    response = client.post("/logout", data={"csrf_token": csrf_from(client, "/")})

    assert response.status_code == 303 and response.location == "/login"
    assert client.get("/").status_code == 303


def test_dashboard_session_does_not_open_the_api(tokens_app):
    """The API still wants a Bearer token: a cookie alone would invite CSRF on the API."""
    client = client_from(tokens_app, REMOTE)
    log_in(client, API_TOKEN)

    assert client.get("/").status_code == 200
    assert client.get("/api/v1/nodes").status_code == 401


def test_removing_a_token_from_the_config_ends_its_sessions(build_app):
    """The session holds a fingerprint re-checked on every request, not a bare role."""
    settings = {"SECRET_KEY": "s" * 32, "READ_TOKENS": [READ_TOKEN]}
    before = client_from(build_app(API_TOKENS=[API_TOKEN], **settings), REMOTE)
    log_in(before, API_TOKEN)
    cookie = before.get_cookie("provisioner_session")
    after = client_from(build_app(API_TOKENS=["another-api-token-0123456789"], **settings))
    after.set_cookie("provisioner_session", cookie.value)

    assert before.get("/").status_code == 200
    assert after.get("/").status_code == 303


@pytest.mark.parametrize(
    ("next_path", "landing"),
    [
        ("/stalled", "/stalled"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_login_returns_only_to_local_pages(tokens_app, next_path, landing):
    client = client_from(tokens_app, REMOTE)

    assert log_in(client, API_TOKEN, next_path).location == landing


def test_tokens_never_reach_the_log(tokens_app, caplog):
    client = client_from(tokens_app, REMOTE)
    wrong = "wrong-dashboard-token-0123456789"

    with caplog.at_level(logging.DEBUG):
        log_in(client, wrong)
        log_in(client, READ_TOKEN)
        log_in(client, API_TOKEN)

    assert "dashboard login refused" in caplog.text
    assert "dashboard login (full access)" in caplog.text
    for secret in (API_TOKEN, READ_TOKEN, wrong):
        assert secret not in caplog.text

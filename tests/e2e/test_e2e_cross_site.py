"""End to end: what another web site can make the operator's Chromium do to ``provisioner
serve`` in loopback-only mode (no operator token).

A page served from another origin (127.0.0.2) submits an HTML form to the server's
report-token endpoint, as any site the operator opens could: it used to mint a token. And a
DNS name pointed at 127.0.0.1 (Chromium's resolver rules stand in for a rebinding DNS
server) must not read the operator API.
"""

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import browser
import dbcheck
import pytest
from serverproc import ServerProcess
from serverproc import start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason())),
]

MAC = "52:54:00:c5:00:01"
ATTACKER_ADDRESS = "127.0.0.2"
REBOUND_NAME = "rebind.attacker.test"
PAGE_TIMEOUT_SECONDS = 20

FORM_PAGE = """<!doctype html>
<html><body>
<form id="f" method="POST" action="{target}"><input type="hidden" name="x" value="1"></form>
<script>document.getElementById("f").submit();</script>
</body></html>
"""


@contextmanager
def attacker_site(page: str) -> Iterator[str]:
    """An HTTP server on another loopback address serving ``page``; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    site = http.server.ThreadingHTTPServer((ATTACKER_ADDRESS, 0), Handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{ATTACKER_ADDRESS}:{site.server_address[1]}/"
    finally:
        site.shutdown()
        site.server_close()
        thread.join()


def report_token_hash(server: ServerProcess) -> str | None:
    url = server.settings["PROVISIONER_DATABASE_URL"]
    sql = "SELECT report_token_hash FROM nodes WHERE mac_address = :mac"
    return dbcheck.rows(url, sql, mac=MAC)[0][0]


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_another_sites_form_cannot_mint_a_report_token(tmp_path: Path):
    from selenium.webdriver.support.ui import WebDriverWait

    with start_server(tmp_path) as server:
        node = server.post_json("/api/v1/nodes", {"mac_address": MAC}).body["data"]
        target = f"{server.url}/api/v1/nodes/{node['id']}/report-token"
        with (
            attacker_site(FORM_PAGE.format(target=target)) as page,
            browser.chromium(tmp_path / "profile") as driver,
        ):
            driver.get(page)
            WebDriverWait(driver, PAGE_TIMEOUT_SECONDS).until(
                lambda d: d.current_url.startswith(server.url)
            )
            answer = page_text(driver)

        assert "Cross-site request refused" in answer, answer
        assert '"token"' not in answer
        assert report_token_hash(server) is None


def test_rebound_dns_name_cannot_read_the_operator_api(tmp_path: Path):
    rules = f"--host-resolver-rules=MAP {REBOUND_NAME} 127.0.0.1"
    with (
        start_server(tmp_path) as server,
        browser.chromium(tmp_path / "profile", extra_flags=(rules,)) as driver,
    ):
        assert server.post_json("/api/v1/nodes", {"mac_address": MAC}).status == 201

        driver.get(f"http://{REBOUND_NAME}:{server.port}/api/v1/nodes")
        answer = page_text(driver)
        driver.get(f"http://127.0.0.1:{server.port}/api/v1/nodes")
        by_address = page_text(driver)

    assert "ALLOWED_HOSTS" in answer, answer
    assert MAC not in answer
    assert MAC in by_address  # the operator's own browser, by address, still reads it

"""End to end: ``/api/docs`` renders in a real headless Chromium that can reach nothing but
loopback, as on a provisioning network with no internet (Swagger UI is served locally)."""

import json
from pathlib import Path

import browser
import pytest
from serverproc import start_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason())),
]

#: Chromium's own pages and resources (its new-tab page), which are not the page's requests.
BROWSER_INTERNAL = ("chrome:", "chrome-extension:", "chrome-untrusted:", "devtools:")
#: How long Swagger UI may take to fetch the OpenAPI document and draw the operations.
RENDER_TIMEOUT_SECONDS = 30


def network_events(driver) -> list[dict]:
    """The DevTools Network.* events Chromium logged since the last call."""
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    return [event for event in events if event["method"].startswith("Network.")]


def test_api_docs_render_with_no_network_but_loopback(tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with (
        start_server(tmp_path) as server,
        browser.chromium(
            tmp_path / "chromium-profile",
            extra_flags=(browser.LOOPBACK_ONLY,),
            performance_log=True,
        ) as driver,
    ):
        network_events(driver)  # drop what the browser's own start-up page fetched
        driver.get(server.url + "/api/docs")
        WebDriverWait(driver, RENDER_TIMEOUT_SECONDS).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 10
        )
        paths = {
            element.text
            for element in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        }
        title = driver.find_element(By.CSS_SELECTOR, ".info .title").text
        events = network_events(driver)
        driver.save_screenshot(str(tmp_path / "api-docs.png"))

    sent = {
        e["params"]["requestId"]: e["params"]["request"]["url"]
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and not e["params"]["request"]["url"].startswith(BROWSER_INTERNAL)
    }
    requested = list(sent.values())
    failed = [
        (sent[e["params"]["requestId"]], e["params"]["errorText"])
        for e in events
        if e["method"] == "Network.loadingFailed" and e["params"]["requestId"] in sent
    ]
    assert any(url.endswith("/swagger-ui-bundle.js") for url in requested), requested
    assert any(url.endswith("/api/v1/openapi.json") for url in requested), requested
    off_machine = [url for url in requested if not url.startswith((server.url, "data:"))]
    assert off_machine == [] and failed == [], (off_machine, failed)
    assert "provisioner" in title
    assert {"/api/v1/boot", "/api/v1/report", "/api/v1/nodes"} <= {p.strip() for p in paths}

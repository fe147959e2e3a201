"""End to end: the dashboard in a real headless Chromium against ``provisioner serve``.

A node is booted through the API into ``installing``; an operator logs in with an API token,
watches the progress bar move after an installer's report (no page reload: the page polls
its fragment), retires the node with the button, and the API confirms it.
"""

from pathlib import Path

import browser
import pytest
from serverproc import ServerProcess
from serverproc import start_server
from workflowfiles import write_test_workflow

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(browser.missing_reason() is not None, reason=str(browser.missing_reason())),
]

API_TOKEN = "e2e-dashboard-api-token-0123456789"
MAC = "52:54:00:da:5b:01"
HOSTNAME = "web-e2e-01"
#: How long the page may take to show a change (it polls every 2.5 s).
LIVE_TIMEOUT_SECONDS = 15


def api(server: ServerProcess, method: str, path: str, body: object = None) -> dict:
    """An operator API call with the API token; fails the test on an error status."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    response = server.request(method, path, body, headers=headers)
    assert response.status < 300, response
    return response.body


def boot_into_installing(server: ServerProcess) -> tuple[str, str]:
    """Register, assign a workflow, start the install and PXE-boot; return (id, report token)."""
    node = api(server, "POST", "/api/v1/nodes", {"mac_address": MAC, "hostname": HOSTNAME})
    api(server, "PATCH", f"/api/v1/nodes/{MAC}", {"workflow_id": "e2e-os"})
    api(server, "PATCH", f"/api/v1/nodes/{MAC}/state", {"state": "pending"})
    booted = server.get(f"/api/v1/boot?mac={MAC}")
    assert booted.status == 200 and "kernel" in booted.text, booted
    token = api(server, "POST", f"/api/v1/nodes/{MAC}/report-token")["data"]["token"]
    assert api(server, "GET", f"/api/v1/nodes/{MAC}")["data"]["state"] == "installing"
    return node["data"]["id"], token


def report_progress(server: ServerProcess, token: str, progress: int) -> None:
    """What an installer sends, with its report token."""
    body = {"mac_address": MAC, "event": "install_progress", "progress": progress}
    headers = {"Authorization": f"Bearer {token}"}
    response = server.post_json("/api/v1/report", body, headers=headers)
    assert response.status == 200, response


def test_operator_watches_an_install_and_retires_the_node(tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    workflows = tmp_path / "workflows"
    workflows.mkdir()
    write_test_workflow(
        workflows, "e2e-os", kernel_path="${server}/files/vmlinuz", initrd_path="/files/initrd.img"
    )
    with (
        start_server(tmp_path, WORKFLOWS_DIR=str(workflows), API_TOKENS=API_TOKEN) as server,
        browser.chromium(tmp_path / "chromium-profile") as driver,
    ):
        node_id, report_token = boot_into_installing(server)
        report_progress(server, report_token, 20)
        wait = WebDriverWait(driver, LIVE_TIMEOUT_SECONDS)

        driver.get(server.url + "/")
        assert driver.current_url.startswith(server.url + "/login")
        driver.find_element(By.NAME, "token").send_keys(API_TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        row = wait.until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, f'tr[data-node="{node_id}"]')
            )
        )
        assert row.find_element(By.TAG_NAME, "progress").get_attribute("value") == "20"
        cookie = driver.get_cookie("provisioner_session")
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax"

        row.find_element(By.LINK_TEXT, MAC).click()
        wait.until(expected_conditions.title_contains(HOSTNAME))
        driver.execute_script("window.stillTheSamePage = true;")
        report_progress(server, report_token, 65)
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, "#node-live progress").get_attribute("value")
                == "65"
            )
        )
        assert driver.execute_script("return window.stillTheSamePage === true;")
        assert "65%" in driver.find_element(By.CSS_SELECTOR, ".timeline").text
        driver.save_screenshot(str(tmp_path / "dashboard-installing.png"))

        driver.find_element(By.CSS_SELECTOR, 'button[value="retired"]').click()
        wait.until(expected_conditions.alert_is_present()).accept()
        flash = wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".flash-ok"))
        )
        assert flash.text == "State changed from installing to retired"
        driver.save_screenshot(str(tmp_path / "dashboard-retired.png"))
        state = api(server, "GET", f"/api/v1/nodes/{MAC}")["data"]["state"]
        exit_code = server.stop()
        log = server.log_text()

    assert state == "retired"
    assert (tmp_path / "dashboard-installing.png").stat().st_size > 10_000
    assert (tmp_path / "dashboard-retired.png").read_bytes().startswith(b"\x89PNG")
    assert exit_code == 0, log[-2000:]
    assert API_TOKEN not in log and report_token not in log

"""Make ``docs/dashboard.png``: the dashboard with nodes in several states, in headless Chromium.

    .venv/bin/python tests/dashboard_screenshot.py [OUTPUT.png]

Starts the real server on a scratch SQLite database with the example workflows, walks a
handful of machines through their lifecycles with the same requests PXE boots and
installers send, and screenshots the nodes page.
"""

import sys
import tempfile
from pathlib import Path

import browser
from serverproc import ServerProcess
from serverproc import start_server

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "docs" / "dashboard.png"


def post(server: ServerProcess, path: str, body: object) -> None:
    response = server.post_json(path, body)
    assert response.status < 300, response


def patch(server: ServerProcess, path: str, body: object) -> None:
    response = server.patch_json(path, body)
    assert response.status < 300, response


def report(server: ServerProcess, mac: str, event: str, **fields: object) -> None:
    post(server, "/api/v1/report", {"mac_address": mac, "event": event, **fields})


def boot(server: ServerProcess, mac: str) -> None:
    assert server.get(f"/api/v1/boot?mac={mac}").status == 200


def start_install(server: ServerProcess, mac: str, hostname: str, workflow: str, tag: str):
    """Register a node, assign a workflow, queue it and PXE-boot it into ``installing``."""
    node = {"mac_address": mac, "hostname": hostname, "workflow_id": workflow, "tags": [tag]}
    post(server, "/api/v1/nodes", node)
    patch(server, f"/api/v1/nodes/{mac}/state", {"state": "pending"})
    boot(server, mac)


def populate(server: ServerProcess) -> None:
    """Nodes in most states: active, installing, installed, failed, pending, retired..."""
    start_install(server, "52:54:00:10:00:01", "web-01", "ubuntu-24.04", "rack1")
    report(server, "52:54:00:10:00:01", "install_complete")
    report(server, "52:54:00:10:00:01", "first_boot")
    start_install(server, "52:54:00:10:00:02", "web-02", "ubuntu-24.04", "rack1")
    report(server, "52:54:00:10:00:02", "install_progress", progress=35)
    start_install(server, "52:54:00:10:00:03", "web-03", "ubuntu-24.04", "rack1")
    report(server, "52:54:00:10:00:03", "install_progress", progress=80)
    start_install(server, "52:54:00:20:00:01", "db-01", "debian-12", "rack2")
    report(server, "52:54:00:20:00:01", "install_complete")  # never reports first_boot
    start_install(server, "52:54:00:20:00:02", "db-02", "debian-12", "rack2")
    for attempt in range(3):
        if attempt:
            boot(server, "52:54:00:20:00:02")
        report(server, "52:54:00:20:00:02", "install_failed", message="no disk found")
    start_install(server, "52:54:00:30:00:01", "gpu-01", "rocky-9", "rack3")
    report(server, "52:54:00:30:00:01", "install_failed", message="mirror timeout")
    start_install(server, "52:54:00:30:00:02", "gpu-02", "rocky-9", "rack3")
    report(server, "52:54:00:30:00:02", "install_complete")
    report(server, "52:54:00:30:00:02", "first_boot")
    patch(server, "/api/v1/nodes/52:54:00:30:00:02/state", {"state": "reprovision"})
    post(server, "/api/v1/nodes", {"mac_address": "52:54:00:90:00:01", "hostname": "old-01"})
    patch(server, "/api/v1/nodes/52:54:00:90:00:01/state", {"state": "retired"})
    boot(server, "52:54:00:ab:cd:ef")  # an unknown machine: discovered


def main(output: Path) -> None:
    """Write the screenshot to ``output``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    reason = browser.missing_reason()
    if reason:
        sys.exit(f"cannot take the screenshot: {reason}")
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        with (
            start_server(
                directory,
                WORKFLOWS_DIR=str(ROOT / "examples" / "workflows"),
                REPORT_AUTH="open",
                FIRST_BOOT_TIMEOUT_MINUTES=0.001,
            ) as server,
            browser.chromium(directory / "profile", width=1280, height=780) as driver,
        ):
            populate(server)
            driver.get(server.url + "/")
            # The first poll of the live fragment shows the "live" mark in the header.
            WebDriverWait(driver, 10).until(
                lambda d: d.find_element(By.CSS_SELECTOR, "[data-live-status]").is_displayed()
            )
            driver.save_screenshot(str(output))
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)

"""A real headless Chromium for the dashboard tests, driven by Selenium.

Only the Debian packages are used (``chromium`` and ``chromium-driver``; ``make e2e-deps``
installs them): Selenium is handed both paths, so its manager never downloads a browser or
a driver. ``missing_reason()`` says why a test must skip.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
DRIVER_NAMES = ("chromedriver",)
#: Flags that work as root in a container with no display and no network to phone home to.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",
)


def _find(names: tuple[str, ...]) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def missing_reason() -> str | None:
    """Why no browser test can run here, or ``None`` when everything is installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if _find(CHROMIUM_NAMES) is None:
        return "chromium is not installed (make e2e-deps: Debian package chromium)"
    if _find(DRIVER_NAMES) is None:
        return "chromedriver is not installed (make e2e-deps: Debian package chromium-driver)"
    return None


#: Resolve no host name but loopback: a page that needs anything off this machine breaks.
LOOPBACK_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@contextmanager
def chromium(
    profile_dir: Path,
    width: int = 1280,
    height: int = 900,
    *,
    extra_flags: tuple[str, ...] = (),
    performance_log: bool = False,
) -> Iterator:
    """A headless Chromium WebDriver with a throw-away profile in ``profile_dir``.

    ``performance_log`` records the DevTools network events (``driver.get_log("performance")``).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _find(CHROMIUM_NAMES) or ""
    for flag in FLAGS + extra_flags:
        options.add_argument(flag)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile_dir}")
    service = Service(executable_path=_find(DRIVER_NAMES), log_output=os.devnull)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()

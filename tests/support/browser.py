"""A real headless Chromium for page tests and benchmarks: Debian's chromium and chromium-driver (scripts/setup.sh
installs them) driven by selenium (PyPI). Missing, a test skips; under CI=true it fails (CI tests the page)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# as root, with no network: no sandbox (root), and none of Chromium's own calls home (they would only be refused)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


def missing() -> str | None:
    """Why there is no browser to test with, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing: apt-get install {package} (scripts/setup.sh installs it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium missing: pip install -e '.[test]' (scripts/setup.sh does)"
    return None


def require() -> None:
    import pytest

    why = missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


@contextmanager
def chromium():
    """A selenium WebDriver on a headless Chromium with a profile of its own, removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cctl-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM   # with the driver's path too, selenium never looks for (or fetches) one
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

"""The integration tier's shared servers: one BentoML service on the session's champion, behind an API key."""

from __future__ import annotations

import os
import shutil

import pytest

from ops.processes import ServiceProcess
from tests.helpers import API_KEY


@pytest.fixture(scope="session")
def service(champion_home, tmp_path_factory):
    """Started once for every test that talks to a running service (requests, the web page, schemathesis)."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    env = {"POPULARITY_HOME": str(champion_home), "POPULARITY_API_KEY": API_KEY}
    with ServiceProcess(port=0, log_path=log, env=env) as svc:
        yield svc


@pytest.fixture(scope="module", autouse=True)
def _shared_prefect(prefect_api):
    """This tier's commands and flows report to the session's Prefect server (``_environment`` undoes it)."""
    os.environ["PREFECT_API_URL"] = prefect_api


@pytest.fixture
def browser():
    """Headless Chromium driven by Selenium (Debian's chromium and chromium-driver; .ci/run installs them).
    Without them a browser test skips with the reason, and fails under CI=true: CI must run it."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        why = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: a browser test must run, not skip: it {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()

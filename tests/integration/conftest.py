"""The integration tier's shared servers and homes: one BentoML service on the session's champion, behind an
API key, and the champion with a challenger beside it for the live-evidence modules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from ops.processes import REPO, ServiceProcess
from tests.helpers import API_KEY


@pytest.fixture(scope="session")
def service(champion_home, tmp_path_factory):
    """Started once for every test that talks to a running service (requests, the web page, schemathesis)."""
    log = tmp_path_factory.mktemp("service") / "service.log"
    env = {"POPULARITY_HOME": str(champion_home), "POPULARITY_API_KEY": API_KEY}
    with ServiceProcess(port=0, log_path=log, env=env) as svc:
        yield svc


@pytest.fixture(scope="session")
def champion_and_challenger(champion_home, prefect_api, tmp_path_factory):
    """A copy of the session's home with a second model, a quick colors-svm on the same snapshot, as the
    challenger: ``(home, champion version, challenger version)``. Trained once for the live-evidence
    modules (``test_live_rollback``, ``test_live_promotion_service``), each of which takes a copy."""
    from tests.integration.test_live_rollback import NAME, _env

    home = tmp_path_factory.mktemp("champion-and-challenger") / "home"
    shutil.copytree(champion_home, home, ignore=shutil.ignore_patterns("requests*"))  # the service's log
    registry = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    champion = registry.get_model_version_by_alias(NAME, "champion")
    done = subprocess.run([sys.executable, "-m", "cli", "train", champion.tags["snapshot"], "--models", "colors-svm",
                           "--quick", "--json"], env={**_env(home), "PREFECT_API_URL": prefect_api}, cwd=REPO,
                          capture_output=True, text=True, timeout=900)  # set up before this tier's _shared_prefect
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads(done.stdout.strip().splitlines()[-1])
    challenger = str(trained["registered"]["version"])
    assert str(registry.get_model_version_by_alias(NAME, "challenger").version) == challenger != str(champion.version)
    return home, str(champion.version), challenger


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

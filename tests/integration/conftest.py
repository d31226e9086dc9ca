"""The integration tier's shared servers: one BentoML service on the session's champion, behind an API key."""

from __future__ import annotations

import os

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

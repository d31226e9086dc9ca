"""`popularity schedule` against a real Prefect server: deployments with their crons, and a run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ops.processes import free_port
from flows.schedules import local_server
from pipelines.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path):
    """A Prefect server on 127.0.0.1 started here, and the `popularity schedule` process serving against it."""
    settings = Settings(home=tmp_path / "home")
    settings.root.mkdir(parents=True)
    with local_server(settings, free_port()) as url:
        env = {**os.environ, "POPULARITY_HOME": str(settings.root), "PREFECT_API_URL": url,
               "PREFECT_HOME": str(settings.root / "prefect"), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(tmp_path / "schedule.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "cli", "schedule", "--task", "binary"], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield url, process, tmp_path / "schedule.log"
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()


def _deployment(client, name: str, process, log_path, timeout_s: float = 120):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            time.sleep(1)
    raise AssertionError(f"{name} was not registered in {timeout_s}s:\n{log_path.read_text()[-3000:]}")


def test_deployments_are_registered_with_their_schedules_and_a_run_completes(served):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, process, log_path = served
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        retrain = _deployment(client, "retrain/popularity-binary", process, log_path)
        monitor = _deployment(client, "monitor/popularity-binary", process, log_path)
        assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 1"]
        assert [s.schedule.cron for s in monitor.schedules] == ["0 * * * *"]
        assert all(s.active for s in retrain.schedules + monitor.schedules)
        assert retrain.parameters == {"task": "binary", "trigger": "schedule"}
        assert monitor.parameters == {"task": "binary", "retrain": True}

        # No champion yet: the hourly monitor says so and completes, deciding nothing.
        run = run_deployment("monitor/popularity-binary", timeout=150, poll_interval=2, as_subflow=False)
        assert run.state.is_completed(), (run.state, log_path.read_text()[-3000:])
    assert "no champion" in log_path.read_text()

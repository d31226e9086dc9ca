"""`popularity schedule` against a real Prefect server: deployments with their crons, and a run completes;
`popularity worker` registers the deployments of the tasks it is given, both tasks as the deploy files run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ops.processes import free_port, stop_group
from flows import alerts
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
            stop_group(process, grace_s=30)
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
        assert retrain.parameters == {"task": "binary"}  # a run labels itself schedule or manual
        assert monitor.parameters == {"task": "binary", "retrain": True}

        # No champion yet: the hourly monitor says so and completes, deciding nothing.
        run = run_deployment("monitor/popularity-binary", timeout=150, poll_interval=2, as_subflow=False)
        assert run.state.is_completed(), (run.state, log_path.read_text()[-3000:])
    assert "no champion" in log_path.read_text()


def _worker(url: str, settings: Settings, log_path, *args: str, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """`popularity worker ARGS` against the server at ``url``, its health check on a free port."""
    port = str(free_port())
    env = {**os.environ, "POPULARITY_HOME": str(settings.root), "PREFECT_API_URL": url,
           "PREFECT_HOME": str(settings.root / "prefect"), "PREFECT_WORKER_WEBSERVER_PORT": port, **extra_env}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([sys.executable, "-m", "cli", "worker", *args], env=env,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{port}/health"


def _healthy(health: str, process, log_path, timeout_s: float = 120) -> None:
    """The worker answers its health check once it has registered everything and polls the pool."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()[-3000:]
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"the worker did not answer {health} in {timeout_s}s:\n{log_path.read_text()[-3000:]}")


def test_the_worker_registers_one_task_or_every_task_as_the_deploy_files_run_it(tmp_path):
    """`popularity worker --task binary` registers the binary task's two deployments only; the command of
    compose, the manifests and the image registers the retrain and monitor deployments of both tasks."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import DeploymentSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.tasks import TASKS
    from tests.unit.test_deploy_files import deploy_commands

    (deployed,) = {tuple(c) for c in deploy_commands() if c[1] == "worker"}
    settings = Settings(home=tmp_path / "home")
    settings.root.mkdir(parents=True)
    with local_server(settings, free_port()) as url, temporary_settings(updates={PREFECT_API_URL: url}):
        def names(client) -> set[str]:
            return {f"{client.read_flow(d.flow_id).name}/{d.name}"
                    for d in client.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)}

        process, health = _worker(url, settings, tmp_path / "one.log", "--pool", "solo", "--task", "binary",
                                  "--healthcheck", POPULARITY_ALERTS__WEBHOOK_URL="http://127.0.0.1:9/hook")
        try:
            _healthy(health, process, tmp_path / "one.log")
        finally:
            stop_group(process, grace_s=30)
        with get_client(sync_client=True) as client:
            assert names(client) == {"retrain/popularity-binary", "monitor/popularity-binary"}
            # with a webhook configured the worker registers the alerts (tests/integration/test_alerts.py)
            for alert in alerts.ALERTS:  # read_automations() sends nulls that prefect 3.8.8's server refuses
                assert len(client.read_automations_by_name(alerts.PREFIX + alert.name)) == 1, alert.name
        assert "alerts: 6 Prefect automations notify the webhook" in (tmp_path / "one.log").read_text()

        process, health = _worker(url, settings, tmp_path / "all.log", *deployed[2:])
        try:
            _healthy(health, process, tmp_path / "all.log")
        finally:
            stop_group(process, grace_s=30)
        with get_client(sync_client=True) as client:
            assert names(client) == {f"{flow}/popularity-{task}" for flow in ("retrain", "monitor") for task in TASKS}
            for task in TASKS:
                retrain = client.read_deployment_by_name(f"retrain/popularity-{task}")
                monitor = client.read_deployment_by_name(f"monitor/popularity-{task}")
                assert retrain.parameters == {"task": task}
                assert monitor.parameters == {"task": task, "retrain": True}
                assert [s.schedule.cron for s in retrain.schedules] == ["0 3 * * 1"]
                assert [s.schedule.cron for s in monitor.schedules] == ["0 * * * *"]
                assert retrain.work_pool_name == monitor.work_pool_name == "popularity"
    assert "popularity-score" in (tmp_path / "all.log").read_text()  # the worker says what it registered

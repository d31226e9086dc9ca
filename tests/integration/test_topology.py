"""The team topology on this machine: MLflow and Prefect servers on fresh PostgreSQL databases, a
process work pool with a worker, and the pipeline, retraining and monitoring deployments run
through it; everything is checked from the servers' own APIs and torn down by process id."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from flows.processes import ManagedProcess
from tests.integration import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

POOL = "popularity-process"
DEPLOYMENTS = [
    ("flows/demo.py:run_flow", "pipeline", {"source": "demo:120", "quick": True, "port": 0, "requests": 20}),
    ("flows/monitor.py:retrain_flow", "popularity-binary", {"task": "binary", "models": ["colors-svm"],
                                                              "quick": True, "trigger": "schedule"}),
    ("flows/monitor.py:monitor_flow", "popularity-binary", {"task": "binary", "retrain": False}),
]


@dataclass
class Stack:
    root: Path
    mlflow_url: str
    api_url: str
    databases: dict[str, str]
    worker: ManagedProcess
    runs: dict


def _run(api_url: str, name: str):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        return run_deployment(name, timeout=540, poll_interval=3)


@pytest.fixture(scope="module")
def topology(tmp_path_factory):
    if not stack.postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    root = tmp_path_factory.mktemp("topology")
    logs = root / "logs"
    databases = {"mlflow": stack.create_database("popularity_mlflow"),
                 "prefect": stack.create_database("popularity_prefect")}
    started: list[ManagedProcess] = []
    try:
        mlflow, mlflow_url = stack.mlflow_server(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{databases['mlflow']}",
                                                 root / "artifacts", logs)
        started.append(mlflow)
        server, api_url = stack.prefect_server(
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['prefect']}", root / "prefect-server", logs)
        started.append(server)
        env = stack.clean_env(PREFECT_API_URL=api_url, MLFLOW_TRACKING_URI=mlflow_url,
                              POPULARITY_HOME=str(root / "home"), PREFECT_HOME=str(root / "prefect-client"))
        stack.prefect(["work-pool", "create", POOL, "--type", "process"], env)
        stack.deploy(POOL, DEPLOYMENTS, env)
        worker = stack.worker(POOL, env, logs)
        started.append(worker)
        runs = {}
        for name in ("popularity-run/pipeline", "retrain/popularity-binary", "monitor/popularity-binary"):
            runs[name] = _run(api_url, name)
            assert runs[name].state.is_completed(), f"{name}: {runs[name].state}\n{worker.log()}"
        yield Stack(root, mlflow_url, api_url, databases, worker, runs)
    finally:
        for process in reversed(started):
            process.stop()
        for database in databases.values():
            stack.drop_database(database)


def test_flow_runs_ran_on_the_worker(topology):
    from prefect import get_client
    from prefect.client.schemas.sorting import DeploymentSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: topology.api_url}), get_client(sync_client=True) as client:
        for name, run in topology.runs.items():
            stored = client.read_flow_run(run.id)
            assert stored.state.is_completed(), name
            assert stored.work_pool_name == POOL and stored.deployment_id is not None
        # Prefect 3.8.8's client sends limit/sort as null, which its own server refuses: pass both.
        names = {d.name for d in client.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC)}
    assert names == {"pipeline", "popularity-binary"}
    assert int(stack.psql("SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'",
                          topology.databases["prefect"])) >= 3


def test_mlflow_server_holds_runs_model_and_champion(topology):
    client = MlflowClient(topology.mlflow_url)
    experiment = client.get_experiment_by_name("popularity")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), "artifacts are not proxied"
    runs = client.search_runs([experiment.experiment_id])
    names = {r.info.run_name for r in runs}
    assert {"pipeline-binary", "retrain-binary", "colors-svm", "stats-gb", "cnn"} <= names
    assert all(r.info.status == "FINISHED" for r in runs)
    versions = client.search_model_versions("name = 'popularity-binary'")
    assert len(versions) == 2 and all(v.status == "READY" for v in versions)
    champion = client.get_model_version_by_alias("popularity-binary", "champion")
    assert champion.tags["gate"] == "passed"
    assert int(stack.psql("SELECT count(*) FROM runs", topology.databases["mlflow"])) == len(runs)


def test_artifacts_went_through_the_server(topology):
    client = MlflowClient(topology.mlflow_url)
    champion = client.get_model_version_by_alias("popularity-binary", "champion")
    assert {a.path for a in client.list_artifacts(champion.run_id)} >= {"evaluation", "reference"}
    stored = list((topology.root / "artifacts").rglob("MLmodel"))
    assert stored, "no model files under the server's --artifacts-destination"
    assert not (topology.root / "home" / "mlartifacts").exists()


def test_a_killed_flow_run_is_marked_crashed_and_the_next_scheduled_run_proceeds(topology):
    """SIGKILL the process a flow run executes in, mid-flow: the worker reports it crashed, and a run
    scheduled after it is picked up by the same worker and completes."""
    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Scheduled

    with temporary_settings({PREFECT_API_URL: topology.api_url}), get_client(sync_client=True) as client:
        doomed = run_deployment("retrain/popularity-binary", timeout=0)
        deadline = time.monotonic() + 180
        while not client.read_flow_run(doomed.id).state.is_running():
            assert time.monotonic() < deadline, topology.worker.log()
            time.sleep(1)
        time.sleep(3)
        children = psutil.Process(topology.worker.pid).children(recursive=True)
        assert children, "the worker runs no flow-run process"
        for child in children:
            child.kill()
        while not (crashed := client.read_flow_run(doomed.id)).state.is_final():
            assert time.monotonic() < deadline + 120, topology.worker.log()
            time.sleep(1)
        assert crashed.state.is_crashed(), crashed.state

        deployment = client.read_deployment_by_name("retrain/popularity-binary")
        start = datetime.now(UTC) + timedelta(seconds=5)
        next_run = client.create_flow_run_from_deployment(deployment.id, state=Scheduled(scheduled_time=start))
        deadline = time.monotonic() + 400
        while not (finished := client.read_flow_run(next_run.id)).state.is_final():
            assert time.monotonic() < deadline, topology.worker.log()
            time.sleep(2)
    assert finished.state.is_completed(), (finished.state, topology.worker.log())
    assert topology.worker.popen.poll() is None, "the worker died with its flow run"

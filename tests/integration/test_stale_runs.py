"""``kill -9`` of ``popularity train`` mid-way leaves its MLflow runs and its Prefect flow run RUNNING (no
cleanup runs in a killed process): the next ``train`` marks them FAILED and Crashed, saying which process
ended (issue 27)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _flow_runs_of(pid: int) -> list:
    """The Prefect flow runs that the process ``pid`` labelled as its own, read from the session's server
    (Prefect reads its settings when first imported, maybe before this tier pointed them at that server)."""
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: os.environ["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=200, sort=FlowRunSort.START_TIME_DESC)
    return [r for r in runs if (r.labels or {}).get("popularity.pid") == str(pid)]


def test_a_train_killed_mid_way_has_its_runs_marked_failed_and_crashed_by_the_next(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)  # PREFECT_API_URL: the session's server
    collected = _cli(env, "collect", "--source", "demo:120")
    assert collected.returncode == 0, collected.stderr[-2000:]
    mlflow = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")

    def running() -> list:
        """The RUNNING runs. A read that fails (the store being created by the child, or still locked by the
        write the kill cut short) is tried again for up to 10 s, never read as "none running"."""
        for attempt in range(100):
            try:
                experiment = mlflow.get_experiment_by_name("popularity")
                return mlflow.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") if experiment else []
            except Exception:
                if attempt == 99:
                    raise
                time.sleep(0.1)

    train = [sys.executable, "-m", "cli", "train", "--models", "stats-gb", "--quick"]
    child = subprocess.Popen(train, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        # a candidate's run RUNNING inside its parent: killed there, both stay open (a run before training,
        # such as the snapshot's check, may end between the look and the kill)
        while (not any("mlflow.parentRunId" in r.data.tags for r in running()) and child.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.1)
        assert child.poll() is None, f"no candidate's run was RUNNING before train ended (exit {child.poll()})"
        os.killpg(child.pid, signal.SIGKILL)  # as kill -9: nothing of the process's cleanup runs
        assert child.wait(30) == -signal.SIGKILL, "train ended before the kill"
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    left = {r.info.run_id for r in running()}
    assert left, "the kill left no MLflow run RUNNING"
    flow_runs = _flow_runs_of(child.pid)
    assert any(r.state.is_running() for r in flow_runs), [(r.name, r.state) for r in flow_runs]

    again = _cli(env, "train", "--models", "stats-gb", "--quick", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    for run_id in left:
        run = mlflow.get_run(run_id)
        assert run.info.status == "FAILED", (run.info.run_name, run.info.status)
        assert f"process {child.pid}" in run.data.tags["popularity.failure"], run.data.tags
    assert not running()
    for flow_run in _flow_runs_of(child.pid):
        assert flow_run.state.is_crashed(), (flow_run.name, flow_run.state)
        assert f"process {child.pid}" in flow_run.state.message, flow_run.state.message
    assert json.loads(again.stdout.strip().splitlines()[-1])["registered"]["version"]

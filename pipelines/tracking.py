"""MLflow set-up: the tracking URI and experiments whose artifacts live under the home; runs that record the
process holding them open, and the RUNNING runs of killed processes marked FAILED."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import mlflow

from pipelines.settings import Settings


def experiment(settings: Settings, name: str) -> str:
    """Get or create ``name``, storing its artifacts under the home when MLflow runs embedded."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.artifacts_dir / name).as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent run
        return mlflow.get_experiment_by_name(name).experiment_id


# Who holds a run open: a run that a killed process (kill -9, OOM, a lost machine) left RUNNING is found by
# these tags and marked FAILED by the next run (``fail_stale_runs``).
OWNER_HOST, OWNER_PID, OWNER_STARTED = "popularity.host", "popularity.pid", "popularity.process_started"
FAILURE_TAG = "popularity.failure"


def owner() -> dict[str, str]:
    """This process as a run's owner: host name, pid and the process's start time (a reused pid is not it)."""
    import os
    import socket

    import psutil

    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()),
            OWNER_STARTED: f"{psutil.Process().create_time():.3f}"}


def owner_gone(labels: dict) -> str | None:
    """Why the process named by ``labels`` (as :func:`owner` gives them) no longer runs, or None when it still
    does, or when that cannot be told here (no such labels, or another host)."""
    import socket

    import psutil

    host, pid, started = labels.get(OWNER_HOST), labels.get(OWNER_PID), labels.get(OWNER_STARTED)
    if not (host and pid and started) or host != socket.gethostname():
        return None
    try:
        if abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0:
            return None
        gone = f"pid {pid} now belongs to another process"
    except psutil.NoSuchProcess:
        gone = "that process is gone"
    except (psutil.Error, ValueError):
        return None
    return f"process {pid} on {host} ended without closing it ({gone}: killed, or the machine stopped)"


@contextmanager
def start_run(**kwargs) -> Iterator[mlflow.ActiveRun]:
    """``mlflow.start_run`` (a new run or one resumed by ``run_id``) that records this process as its owner."""
    with mlflow.start_run(**kwargs) as run:
        mlflow.set_tags(owner())
        yield run


def fail_stale_runs(settings: Settings) -> list[dict]:
    """Mark FAILED every RUNNING run of this tracking store whose owner process (:func:`owner`) is gone,
    with the reason in its ``popularity.failure`` tag; returns ``{"run_id", "name", "reason"}`` of each.
    Runs without owner tags, or owned on another host, are left as they are."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    failed = []
    for start in range(0, len(experiments), 100):
        for run in client.search_runs(experiments[start:start + 100], "attributes.status = 'RUNNING'",
                                      max_results=1000):
            if (reason := owner_gone(run.data.tags)) is None:
                continue
            client.set_tag(run.info.run_id, FAILURE_TAG, reason)
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append({"run_id": run.info.run_id, "name": run.info.run_name, "reason": reason})
    return failed

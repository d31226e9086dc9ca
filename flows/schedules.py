"""Schedules: retraining on a weekly cron and monitoring hourly, as deployments of one served process.

An ephemeral Prefect API cannot run schedules, so serving needs a real server: the one at
``PREFECT_API_URL``, or a local one started on 127.0.0.1 under the home and stopped on exit.
``deploy/prefect.yaml`` declares the same deployments for a work pool instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.monitor import monitor_flow, retrain_deployment, retrain_flow
from flows.processes import prefect_server
from pipelines.settings import Settings


def deployments(task: str, settings: Settings, retrain_cron: str | None = None,
                monitor_cron: str | None = None) -> list[RunnerDeployment]:
    d = settings.drift
    return [
        retrain_flow.to_deployment(
            name=retrain_deployment(task).split("/")[1], cron=retrain_cron or d.retrain_cron,
            parameters={"task": task, "trigger": "schedule"}, tags=["popularity", task],
            description="Collect, validate, train and promote on a schedule; drift starts it too."),
        monitor_flow.to_deployment(
            name=f"popularity-{task}", cron=monitor_cron or d.monitor_cron,
            parameters={"task": task, "retrain": True}, tags=["popularity", task],
            description="Check the latest request window for drift; drift starts the retrain deployment."),
    ]


@contextmanager
def local_server(settings: Settings, port: int) -> Iterator[str]:
    """A Prefect server on 127.0.0.1 whose database lives under the home; yields its API URL."""
    env = {**os.environ, "PREFECT_HOME": str(settings.root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    server, url = prefect_server(port, settings.root / "logs" / "prefect-server.log", env)
    try:
        yield url
    finally:
        server.stop(grace_s=30)


def serve_schedules(task: str, settings: Settings, port: int = 4200, retrain_cron: str | None = None,
                    monitor_cron: str | None = None) -> None:
    """Register both deployments with their schedules and run their flow runs until interrupted."""
    given = os.environ.get("PREFECT_API_URL")
    with nullcontext(given) if given else local_server(settings, port) as url:
        os.environ["PREFECT_API_URL"] = url  # the flow-run subprocesses inherit it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            print(f"Prefect API and UI: {url.removesuffix('/api')}", flush=True)
            serve(*deployments(task, settings, retrain_cron, monitor_cron))

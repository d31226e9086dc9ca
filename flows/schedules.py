"""Schedules: retraining on a weekly cron and monitoring hourly, as two deployments.

They run one of two ways, from the same :func:`schedules`: served by one process
(``popularity schedule``: no pool, handy on a laptop), or registered on a process work pool from this
checkout and run by a worker (``popularity worker``: the team stack, compose and Kubernetes).
An ephemeral Prefect API cannot run schedules, so serving needs a real server: the one at
``PREFECT_API_URL``, or a local one started on 127.0.0.1 under the home and stopped on exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from prefect import Flow, flow, serve
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.alerts import alerts_line, register_alerts
from flows.monitoring_flows import monitor_flow, retrain_flow
from ops.processes import REPO, prefect_server
from pipelines.settings import Settings


@dataclass(frozen=True)
class Schedule:
    flow: Flow
    entrypoint: str  # the flow as a worker finds it in this checkout
    name: str
    cron: str
    parameters: dict
    description: str

    def deployment_kwargs(self) -> dict:
        return {"name": self.name, "cron": self.cron, "parameters": self.parameters,
                "tags": ["popularity", self.parameters["task"]], "description": self.description}


def schedules(task: str, settings: Settings, retrain_cron: str | None = None,
              monitor_cron: str | None = None) -> list[Schedule]:
    d = settings.drift
    return [
        Schedule(retrain_flow, "flows/monitoring_flows.py:retrain_flow", f"popularity-{task}",
                 retrain_cron or d.retrain_cron,
                 {"task": task},  # the run says who started it: its schedule, a person, or drift and decay
                 "Collect fresh data, validate, train and promote on a schedule; drift starts it too."),
        Schedule(monitor_flow, "flows/monitoring_flows.py:monitor_flow", f"popularity-{task}",
                 monitor_cron or d.monitor_cron,
                 {"task": task, "retrain": True},
                 "Check the latest request window for drift; drift starts the retrain deployment."),
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
            print(alerts_line(register_alerts(settings)), flush=True)
            serve(*(s.flow.to_deployment(**s.deployment_kwargs())
                    for s in schedules(task, settings, retrain_cron, monitor_cron)))


def register_on_pool(pool: str, task: str, settings: Settings) -> list[str]:
    """Create the process pool if it is missing and (re-)register both deployments on it, loaded from
    this checkout; returns their ``flow/deployment`` names."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    names = []
    for s in schedules(task, settings):
        # to_deployment().apply(): flow.deploy() in prefect 3.8.8 sends a null limit that the server refuses (422)
        deployment = flow.from_source(source=str(REPO), entrypoint=s.entrypoint).to_deployment(
            work_pool_name=pool, **s.deployment_kwargs())
        deployment.apply()
        names.append(f"{s.flow.name}/{s.name}")
    return names


def run_worker(pool: str, healthcheck: bool = False, niceness: int = 0) -> None:
    """Replace this process with ``prefect worker start`` on the pool (signals reach the worker itself),
    ``niceness`` lower in priority: the flow runs it starts inherit it, so on one machine a retrain
    never starves the service that answers beside it."""
    os.nice(niceness)
    args = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    os.execv(sys.executable, args + (["--with-healthcheck"] if healthcheck else []))

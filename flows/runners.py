"""``--runner local|dask|dask:ADDRESS`` → the Prefect task runner that mapped tasks run on.

``local`` keeps Prefect's thread pool; ``dask`` starts a throw-away LocalCluster of two worker
processes for the flow; ``dask:tcp://host:8786`` joins a team's running Dask scheduler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # checking a --runner value is a usage check: it must not import Prefect
    from prefect.task_runners import TaskRunner

LOCAL_CLUSTER = {"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": None}


class RunnerError(ValueError):
    """A ``--runner`` value that names no runner."""


def check_runner(spec: str) -> str:
    kind, _, address = spec.partition(":")
    if kind not in ("local", "dask") or (kind == "local" and address):
        raise RunnerError(f"--runner must be local, dask or dask:ADDRESS, not {spec!r}")
    return spec


def task_runner(spec: str = "local") -> TaskRunner:
    from prefect.task_runners import ThreadPoolTaskRunner

    kind, _, address = check_runner(spec).partition(":")
    if kind == "local":
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=LOCAL_CLUSTER)

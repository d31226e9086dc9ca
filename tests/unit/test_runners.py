"""``--runner`` values map to the task runner a flow's mapped tasks run on."""

from __future__ import annotations

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.runners import LOCAL_CLUSTER, RunnerError, task_runner


def test_local_is_the_thread_pool():
    assert isinstance(task_runner("local"), ThreadPoolTaskRunner)


def test_dask_alone_starts_a_two_worker_local_cluster():
    runner = task_runner("dask")
    assert isinstance(runner, DaskTaskRunner)
    assert runner.address is None and runner.cluster_kwargs == LOCAL_CLUSTER and LOCAL_CLUSTER["n_workers"] == 2


def test_dask_with_an_address_joins_that_scheduler():
    assert task_runner("dask:tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"


@pytest.mark.parametrize("spec", ["ray", "local:x", "", "threads"])
def test_unknown_runners_are_refused_with_the_choices(spec):
    with pytest.raises(RunnerError, match="local, dask or dask:ADDRESS"):
        task_runner(spec)

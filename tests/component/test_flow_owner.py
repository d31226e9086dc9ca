"""The promote and monitor flow runs carry their process's labels (host, pid, start time) as the collect, train
and retrain runs do, so that one a killed process left RUNNING is told from a live one by its process on this
host (flows/stale.py), not only after its heartbeats stop. Run in process against the session's Prefect server,
on an empty home: the monitor decides nothing, the promote flow fails for want of a challenger; both are runs."""

from __future__ import annotations

import uuid

import pytest

from pipelines import tracking
from pipelines.settings import get_settings


@pytest.fixture
def empty_home(tmp_path, monkeypatch, prefect_api):
    """The entry points' settings on an empty home, the flows reporting to the session's Prefect server (Prefect
    read its settings when imported)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("POPULARITY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    get_settings.cache_clear()
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield
    get_settings.cache_clear()


def _labels_of_run_tagged(tag: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:  # an explicit sort and limit: none is a 422 from Prefect 3.8.8
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=5)
    return dict(run.labels or {})


@pytest.mark.parametrize("name", ["monitor", "promote"])
def test_promote_and_monitor_runs_carry_their_process_labels(empty_home, name):
    from prefect import tags

    from flows.monitoring_flows import monitor_flow
    from flows.training_flows import promote_flow

    flow = {"monitor": monitor_flow, "promote": promote_flow}[name]
    tag = f"owner-{uuid.uuid4().hex[:8]}"
    with tags(tag):
        state = flow(task="binary", return_state=True)
    assert state.is_completed() if name == "monitor" else state.is_failed(), state
    labels = _labels_of_run_tagged(tag)
    owner = tracking.owner()
    assert {key: labels.get(key) for key in owner} == owner, labels
    assert tracking.owner_gone(labels) is None  # this process: alive, so never crashed as a stale run

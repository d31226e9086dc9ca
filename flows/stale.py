"""Runs that a killed process left RUNNING (``kill -9``, the OOM killer, a machine that stopped): every flow
run records the process it runs in (:func:`claim`), and the next ``train``, ``run`` or ``retrain`` marks
the stuck ones (:func:`take_over`): MLflow runs FAILED (:func:`pipelines.tracking.fail_stale_runs`) and
Prefect flow runs, with their task runs, Crashed, each with a message saying which process ended.

A Prefect flow run is judged by its process on this host (its ``popularity.*`` labels); one of another
host, or without the labels, by its heartbeats (Prefect emits ``prefect.flow-run.heartbeat`` every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds while it runs): silent for three of those, it is crashed too.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from prefect import get_client
from prefect.context import FlowRunContext
from prefect.states import Crashed

from pipelines import tracking
from pipelines.settings import Settings

HEARTBEATS_MISSED = 3  # a flow run without its owner's labels is crashed after this many silent heartbeats


def claim() -> None:
    """Label the current flow run with this process (host, pid, start time); a no-op outside a flow run."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(context.flow_run.id, tracking.owner())


def take_over(settings: Settings) -> dict:
    """:func:`claim` the current flow run, then mark the runs of killed processes; returns what was marked."""
    marked: dict = {"mlflow": [], "prefect": []}
    try:  # housekeeping: a registry or API that does not answer it now is no reason to stop this run
        claim()
        marked["mlflow"] = tracking.fail_stale_runs(settings)
        marked["prefect"] = crash_stale_flow_runs()
    except Exception as exc:  # noqa: BLE001
        print(f"runs left RUNNING by killed processes were not checked: {type(exc).__name__}: {exc}"[:300])
    for run in marked["mlflow"]:
        print(f"MLflow run {run['name']} ({run['run_id']}) marked FAILED: {run['reason']}")
    for run in marked["prefect"]:
        print(f"Prefect flow run {run['name']} ({run['id']}) marked Crashed: {run['reason']}")
    return marked


def crash_stale_flow_runs(limit: int = 200) -> list[dict]:
    """Set Crashed every RUNNING flow run whose process is gone (and its RUNNING task runs)."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                TaskRunFilter, TaskRunFilterFlowRunId, TaskRunFilterState,
                                                TaskRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
    from prefect.settings import get_current_settings

    current = FlowRunContext.get()
    mine = current.flow_run.id if current and current.flow_run else None
    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    heartbeat_s = get_current_settings().flows.heartbeat_frequency
    crashed = []
    with get_client(sync_client=True) as client:
        # (an explicit sort: Prefect 3.8.8's client sends none by default, which its server answers 422)
        for flow_run in client.read_flow_runs(flow_run_filter=running, limit=limit, sort=FlowRunSort.START_TIME_DESC):
            if flow_run.id == mine:
                continue
            labels = dict(flow_run.labels or {})
            reason = tracking.owner_gone(labels)
            if reason is None and heartbeat_s and labels.get(tracking.OWNER_HOST) != socket.gethostname():
                reason = _silent(client, flow_run, heartbeat_s)  # not ours to look at: its heartbeats tell
            if reason is None:
                continue
            message = f"marked crashed by a later run: {reason}"
            client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
            tasks = TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run.id]),
                                  state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING])))
            for task_run in client.read_task_runs(task_run_filter=tasks, sort=TaskRunSort.EXPECTED_START_TIME_DESC):
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            crashed.append({"id": str(flow_run.id), "name": flow_run.name, "reason": reason})
    return crashed


def _silent(client, flow_run, heartbeat_s: int) -> str | None:
    """Why the flow run counts as dead by its heartbeats (none for HEARTBEATS_MISSED intervals since it
    started or last beat), or None."""
    from prefect.events.filters import (EventFilter, EventNameFilter, EventOccurredFilter,
                                        EventResourceFilter)

    now = datetime.now(UTC)
    window = timedelta(seconds=HEARTBEATS_MISSED * heartbeat_s)
    started = flow_run.start_time or flow_run.expected_start_time
    if started is None or now - started < window:
        return None
    beats = client.read_events(filter=EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run.id}"]),
        occurred=EventOccurredFilter(since=now - window, until=now)), limit=1)
    if beats.events:
        return None
    return f"no heartbeat for {window.total_seconds():.0f} s (its process ended: killed, or its machine stopped)"

"""The servers a user runs: the team stack (``stack up|status|down|env``), a Prefect server the flow
commands reuse (``prefect up|down``), a worker, served schedules and the UIs. Their processes are
started and supervised by :mod:`ops`."""

from __future__ import annotations

import os
import shlex
from typing import Annotated

import typer
from rich.table import Table

from cli.options import JsonOpt, TaskOpt, TasksOpt, check_task, check_tasks
from cli.output import console, emit, fail
from pipelines.settings import load_settings

app = typer.Typer()
stack_app = typer.Typer(help="The team stack on this machine: MLflow and Prefect on PostgreSQL, a worker, the "
                             "service.", no_args_is_help=True)
prefect_app = typer.Typer(help="A Prefect server under the home that flow commands reuse (no start-up per "
                               "command).", no_args_is_help=True)


@app.command()
def worker(
    pool: Annotated[str | None, typer.Option(help="Process work pool (default from settings: popularity).")] = None,
    task: TasksOpt = None,
    healthcheck: Annotated[bool, typer.Option(help="Serve the worker's /health on :8080 for container probes.")]
    = False,
) -> None:
    """Create the work pool, register the scheduled retrain and monitor deployments of each task (binary and
    score unless --task names some), and run a worker on it."""
    tasks = check_tasks(task)
    if not os.environ.get("PREFECT_API_URL"):
        fail("a worker needs a Prefect server: set PREFECT_API_URL (`popularity stack up` starts one)", 2)
    settings = load_settings()
    from flows.alerts import alerts_line, register_alerts
    from flows.schedules import register_on_pool, run_worker

    pool = pool or settings.stack.pool
    names = [name for each in tasks for name in register_on_pool(pool, each, settings)]
    console.print(alerts_line(register_alerts(settings)))
    console.print(f"registered {', '.join(names)} on pool {pool}; starting its worker")
    run_worker(pool, healthcheck, settings.stack.worker_niceness)


@app.command()
def schedule(
    task: TaskOpt = "binary",
    retrain_cron: Annotated[str | None, typer.Option(help="Retraining cron (default weekly, from settings).")] = None,
    monitor_cron: Annotated[str | None, typer.Option(help="Monitoring cron (default hourly, from settings).")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server started when PREFECT_API_URL "
                                           "is unset.")] = 4200,
) -> None:
    """Register the retraining and monitoring deployments with their schedules and serve them."""
    check_task(task)
    settings = load_settings()
    from flows.schedules import serve_schedules

    serve_schedules(task, settings, port=port, retrain_cron=retrain_cron, monitor_cron=monitor_cron)


@app.command()
def ui(mlflow_port: int = 5000, prefect_port: int = 4200) -> None:
    """Open the MLflow UI (and the Prefect UI) on the home's stores; Ctrl-C stops both."""
    settings = load_settings()
    from ops.processes import ui_servers, wait_all

    processes = ui_servers(settings.tracking_uri, mlflow_port, prefect_port)
    console.print(f"MLflow UI: http://127.0.0.1:{mlflow_port}   Prefect UI: http://127.0.0.1:{prefect_port}")
    wait_all(processes)


@prefect_app.command("up")
def prefect_up(as_json: JsonOpt = False) -> None:
    """Start a Prefect server under the home, left running; `run`, `collect`, `train`... report to it."""
    from ops.prefect_api import PrefectServer

    part = PrefectServer(load_settings()).up()
    console.print(f"Prefect server at {part.url} (log: {part.log}); commands of this home now use it; "
                  "stop it with `popularity prefect down`")
    emit({"url": part.url, "pid": part.pid, "log": part.log}, as_json)


@prefect_app.command("down")
def prefect_down(as_json: JsonOpt = False) -> None:
    """Stop the Prefect server that `popularity prefect up` started (its runs stay in the home)."""
    from ops.prefect_api import PrefectServer

    stopped = PrefectServer(load_settings()).down()
    console.print("stopped the Prefect server" if stopped else "no Prefect server was running")
    emit({"stopped": stopped}, as_json)


def _stack(task: str = "binary"):
    from ops.stack import Stack

    return Stack(load_settings(), task)


@stack_app.command("up")
def stack_up(task: TaskOpt = "binary", as_json: JsonOpt = False) -> None:
    """Start MLflow, Prefect, a worker with every task's scheduled deployments, and the service of --task, as
    local processes."""
    check_task(task)
    from ops.stack import StackError

    stack = _stack(task)
    try:
        status = stack.up(on_progress=lambda line: console.print(f"started {line}"))
    except StackError as exc:
        fail(str(exc))
    _print_status(status)
    console.print('Use it from this shell: [bold]eval "$(popularity stack env)"[/]; stop it: popularity stack down')
    emit(status, as_json)


@stack_app.command("status")
def stack_status(as_json: JsonOpt = False) -> None:
    """Each part's health and URL; exits 1 unless every part is healthy."""
    status = _stack().status()
    _print_status(status)
    emit(status, as_json)
    if not status["running"]:
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down(as_json: JsonOpt = False) -> None:
    """Stop every part of the stack (the databases and artifacts stay)."""
    summary = _stack().down()
    console.print(f"stopped {', '.join(summary['stopped']) or 'nothing (the stack was not running)'}")
    emit(summary, as_json)


@stack_app.command("env")
def stack_env() -> None:
    """Shell exports that point popularity, MLflow and Prefect commands at the running stack."""
    from ops.stack import StackError

    try:
        environment = _stack().environment()
    except StackError as exc:
        fail(str(exc), kind="not_found")
    for name, value in environment.items():
        print(f"export {name}={shlex.quote(value)}")


@stack_app.command("runs")
def stack_runs(
    flow: Annotated[str | None, typer.Option(help="Only this flow's runs: retrain, monitor, train, promote, …")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many runs, newest first.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """The newest flow runs on the stack's Prefect server (PREFECT_API_URL, else the running stack's): flow, run,
    state with its message (Completed, Refused, Failed, …) and, for retraining, what started it."""
    from ops.stack import StackError

    try:
        api = os.environ.get("PREFECT_API_URL") or _stack().environment()["PREFECT_API_URL"]
    except StackError as exc:
        fail(str(exc), kind="not_found")
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])) if flow else None,
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)
        flows = {flow_id: client.read_flow(flow_id).name for flow_id in {r.flow_id for r in runs}}
    rows = []
    for r in runs:
        trigger = (r.parameters.get("trigger") or ("schedule" if r.auto_scheduled else "manual")
                   if flows[r.flow_id] == "retrain" else "")
        rows.append({"flow": flows[r.flow_id], "run": r.name, "id": str(r.id), "trigger": trigger,
                     "state": r.state.name if r.state else "", "message": (r.state.message or "") if r.state else "",
                     "started": r.start_time.isoformat(timespec="seconds") if r.start_time else ""})
    table = Table(title=f"flow runs at {api}")
    for column in ("started", "flow", "run", "trigger", "state", "message"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] if c != "message" else row[c][:160] for c in ("started", "flow", "run", "trigger",
                                                                             "state", "message")))
    console.print(table if rows else "no flow runs yet")
    emit({"runs": rows}, as_json)


def _print_status(status: dict) -> None:
    table = Table(title=f"popularity stack ({status['home']})")
    for column in ("part", "state", "url"):
        table.add_column(column)
    for name, part in status["parts"].items():
        state = "healthy" if part["healthy"] else ("unhealthy" if part["alive"] else "stopped")
        if "ready" in part and part["healthy"]:
            state += ", ready" if part["ready"] else f", not ready: {part['readiness']}"
        table.add_row(name, state, part["url"])
    console.print(table if status["parts"] else "the stack is not running")



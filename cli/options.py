"""The options several commands take, and the usage checks that answer before any server starts or
any model code loads (each imports only what it checks)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.output import fail
from pipelines.settings import load_settings

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary as the last line.")]
TaskOpt = Annotated[str, typer.Option("--task", help="binary (popular or not) or score (regression).")]
TasksOpt = Annotated[list[str] | None, typer.Option("--task", help="Tasks to register, comma-separated or the "
                                                                    "option repeated (default: binary,score).")]
RunnerOpt = Annotated[str, typer.Option("--runner", help="Where downloads and feature batches run: local, dask "
                                                         "(a 2-worker LocalCluster) or dask:ADDRESS.")]


def check_task(task: str) -> None:
    from pipelines.tasks import TaskError
    from pipelines.tasks import check_task as check

    try:
        check(task)
    except TaskError as exc:
        fail(str(exc), 2)


def check_tasks(tasks: list[str] | None) -> list[str]:
    """``--task binary,score`` or ``--task binary --task score`` as a list in order, each once; none given:
    every task. An unknown one is a usage error."""
    from pipelines.tasks import TASKS

    chosen = list(dict.fromkeys(t.strip() for value in tasks or [] for t in value.split(",") if t.strip()))
    for task in chosen:
        check_task(task)
    return chosen or list(TASKS)


def check_models(models: str | None) -> None:
    """Unknown candidates are a usage error, answered before any server starts or any model code loads."""
    from pipelines.training.candidates import UnknownCandidate
    from pipelines.training.candidates import check_models as check

    try:
        check(models.split(",") if models else [])
    except UnknownCandidate as exc:
        fail(str(exc), 2)


def check_runner(runner: str) -> None:
    from flows.runners import RunnerError
    from flows.runners import check_runner as check

    try:
        check(runner)
    except RunnerError as exc:
        fail(str(exc), 2)


def open_snapshot(snapshot: str | None) -> None:
    """A missing snapshot is a usage error, answered before Prefect starts."""
    settings = load_settings()
    from pipelines.data.snapshots import Snapshot

    try:
        Snapshot.open(settings.datasets_dir, snapshot)
    except FileNotFoundError as exc:
        fail(str(exc), 2)


def reuse_prefect() -> None:
    """Flows report to this home's running Prefect server when there is one, else to a temporary one
    that stops with the command (see ``ops/prefect_api.py``)."""
    from ops.prefect_api import use_running_api

    use_running_api(load_settings())

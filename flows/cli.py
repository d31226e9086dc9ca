"""The ``popularity`` command: one subcommand per flow, ``--json`` for scripts.

Settings are exported to the environment before Prefect, MLflow or BentoML is imported, so every
file they write lands under ``POPULARITY_HOME``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.settings import load_settings

app = typer.Typer(help="Predict how well an image will do online.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console(stderr=True, soft_wrap=True)  # an error stays one line, whatever the width

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary as the last line.")]
TaskOpt = Annotated[str, typer.Option("--task", help="binary (popular or not) or score (regression).")]
RunnerOpt = Annotated[str, typer.Option("--runner", help="Where downloads and feature batches run: local, dask "
                                                         "(a 2-worker LocalCluster) or dask:ADDRESS.")]


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_finite(summary), default=str))


def _finite(value):
    """NaN and infinity become null, so the summary is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, whatever the terminal's width
    raise typer.Exit(code)


def _check_task(task: str) -> None:
    from pipelines.tasks import TaskError, check_task

    try:
        check_task(task)
    except TaskError as exc:
        _fail(str(exc), 2)


def _check_models(models: str | None) -> None:
    """Unknown candidates are a usage error, answered before any server starts or any model code loads."""
    from pipelines.training.candidates import UnknownCandidate, check_models

    try:
        check_models(models.split(",") if models else [])
    except UnknownCandidate as exc:
        _fail(str(exc), 2)


def _check_runner(runner: str) -> None:
    from flows.runners import RunnerError, check_runner

    try:
        check_runner(runner)
    except RunnerError as exc:
        _fail(str(exc), 2)


def _champion_table(champion: dict) -> Table:
    table = Table(title=f"Champion {champion['name']} v{champion['version']} ({champion['family']}: "
                        f"{champion.get('candidate')})")
    table.add_column("metric")
    table.add_column("champion", justify="right")
    table.add_column("baseline", justify="right")
    for key, value in champion["metrics"].items():
        base = champion["baseline"].get(key)
        table.add_row(key, f"{value:.3f}", f"{base:.3f}" if base is not None else "")
    for key, value in champion.get("oracle", {}).items():
        table.add_row(f"{key} (oracle: best achievable)", f"{value:.3f}", "")
    if (selection := champion.get("selection")) and selection["value"] is not None:
        table.caption = f"chosen on the {selection['split']} split ({selection['metric']} {selection['value']:.3f}); " \
                        "the metrics above are on the test split"
    return table


@app.command()
def run(
    source: Annotated[str, typer.Option(help="Source spec, e.g. demo or demo:500.")] = "demo",
    task: TaskOpt = "binary",
    quick: Annotated[bool, typer.Option(help="Short training for smoke runs.")] = False,
    runner: RunnerOpt = "local",
    port: Annotated[int, typer.Option(help="Port of the service started for the probe.")] = 3000,
    as_json: JsonOpt = False,
) -> None:
    """The whole pipeline flow: collect → validate → train → promote → serve → predict → monitor."""
    _check_task(task)
    settings = load_settings()
    from pipelines.data.sources import SpecError, parse_spec

    try:
        parse_spec(source, settings)
    except SpecError as exc:
        _fail(str(exc), 2)
    from flows.demo import run_flow

    _check_runner(runner)
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = run_flow(source=source, task=task, quick=quick, port=port, runner=runner)
    except (LookupError, FailedValidation) as exc:
        _fail(str(exc))
    champion = summary["champion"]
    console.print(_champion_table(champion))
    service = summary["service"]
    console.print(f"Service: answered {service['ok']}/{service['sent']} predictions at {service['url']} "
                  f"(a non-image got HTTP {service['non_image_status']}); start it again with "
                  f"[bold]popularity serve[/] (http://{settings.serving.host}:{settings.serving.port})")
    console.print(f"Drift on held-out images: {summary['monitor']['message']}")
    shifted = summary["shifted"]
    console.print(f"Drift on the same images at {shifted['brightness']:.0%} brightness: {shifted['monitor']['message']}")
    console.print(f"MLflow UI and Prefect UI: [bold]popularity ui[/] (home: {settings.root})")
    _emit(summary, as_json)


@app.command()
def collect(
    source: Annotated[str, typer.Option(help="KIND:LOCATION, e.g. demo:500.")],
    name: Annotated[str | None, typer.Option(help="Data set name (default: the source kind).")] = None,
    label: Annotated[str | None, typer.Option(help="Label scheme (default: the source's own).")] = None,
    drop_outliers: Annotated[bool, typer.Option(help="Drop items more than 6 SD above the mean.")] = False,
    runner: RunnerOpt = "local",
    allow_private: Annotated[bool, typer.Option(help="Allow downloads from private and loopback addresses.")] = False,
    allow_outside_paths: Annotated[bool, typer.Option(help="Allow a manifest to name files outside its folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Collect a source into an immutable snapshot; prints the snapshot id and path."""
    settings = load_settings().for_collection(allow_private, allow_outside_paths)
    from pipelines.data.labels import SCHEMES, LabelError
    from pipelines.data.sources import SpecError, parse_spec

    if label is not None and label not in SCHEMES:
        _fail(f"unknown --label {label!r}; choose from {sorted(SCHEMES)}", 2)
    _check_runner(runner)
    try:
        parse_spec(source, settings)
        from flows.data import collect_flow

        summary = collect_flow(source=source, name=name, label=label, drop_outliers=drop_outliers, runner=runner,
                               allow_private=allow_private, allow_outside_paths=allow_outside_paths)
    except (SpecError, LabelError) as exc:
        _fail(str(exc), 2)
    console.print(f"snapshot {summary['snapshot']} at {summary['path']}: {summary['items']} items, "
                  f"{summary['rejects']} rejects {summary.get('reject_reasons', {})}, labels {summary['labels']}")
    _emit(summary, as_json)


@app.command()
def validate(snapshot: Annotated[str | None, typer.Argument(help="Snapshot id, name or path.")] = None,
             as_json: JsonOpt = False) -> None:
    """Run the Great Expectations suites; exits non-zero on a critical failure."""
    load_settings()
    from flows.data import validate_flow

    try:
        summary = validate_flow(snapshot=snapshot)
    except RuntimeError as exc:
        _fail(str(exc))
    console.print(summary.get("message", summary))
    _emit(summary, as_json)


@app.command()
def train(
    snapshot: Annotated[str | None, typer.Argument(help="Snapshot id, name or path (default: latest).")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated candidates, e.g. colors-svm,cnn.")] = None,
    task: TaskOpt = "binary",
    quick: bool = False,
    runner: RunnerOpt = "local",
    backbone: Annotated[str | None, typer.Option(help="torchvision backbone of the CNNs, e.g. resnet18.")] = None,
    split: Annotated[str | None, typer.Option(help="group (default) or time: test on the latest posts.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Also score K repeated grouped 9:1 splits (mean ± std).")] = None,
    require_faces: Annotated[bool | None, typer.Option("--require-faces/--any-images",
                                                       help="Keep only images with a confident face.")] = None,
    tune: Annotated[bool | None, typer.Option("--tune/--no-tune", help="Optuna search per candidate.")] = None,
    tune_budget: Annotated[float | None, typer.Option(help="Seconds of Optuna search per candidate.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train candidates as MLflow runs, print the comparison, register the best as challenger."""
    _check_task(task)
    _check_runner(runner)
    _check_models(models)
    settings = load_settings()
    from pipelines.data.snapshots import Snapshot

    try:
        Snapshot.open(settings.datasets_dir, snapshot)
    except FileNotFoundError as exc:
        _fail(str(exc), 2)
    from flows.training import train_flow
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = train_flow(snapshot=snapshot, task=task, quick=quick, runner=runner,
                             models=models.split(",") if models else None,
                             options={"backbone": backbone, "split": split, "repeats": repeats,
                                      "require_faces": require_faces, "tune": tune, "tune_budget_s": tune_budget})
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc), 2)
    except FailedValidation as exc:
        _fail(str(exc))
    _emit(summary, as_json)


@app.command()
def promote(task: TaskOpt = "binary",
            rollback: Annotated[bool, typer.Option(help="Restore the previous champion.")] = False,
            as_json: JsonOpt = False) -> None:
    """Re-run the promotion gate on the challenger, or roll back the champion."""
    _check_task(task)
    load_settings()
    from flows.training import promote_flow

    try:
        summary = promote_flow(task=task, rollback=rollback)
    except LookupError as exc:
        _fail(str(exc))
    console.print(summary.get("reason") or f"champion is now version {summary['version']}")
    _emit(summary, as_json)
    if summary.get("promoted") is False:  # the gate refused: a script must not read that as success
        raise typer.Exit(1)


@app.command()
def serve(port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
          host: Annotated[str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1).")] = None,
          ) -> None:
    """Serve the champion with BentoML in the foreground; it follows the registry's champion alias."""
    settings = load_settings()
    port = port or settings.serving.port
    repo = Path(__file__).resolve().parents[1]
    # exec, not a child: as a container's PID 1 BentoML itself must get SIGTERM
    os.execv(sys.executable, [sys.executable, "-m", "bentoml", "serve", "serving.service:Popularity",
                              "--host", host or settings.serving.host, "--port", str(port), "--working-dir", str(repo)])


@app.command()
def worker(
    pool: Annotated[str | None, typer.Option(help="Process work pool (default from settings: popularity).")] = None,
    task: TaskOpt = "binary",
    healthcheck: Annotated[bool, typer.Option(help="Serve the worker's /health on :8080 for container probes.")]
    = False,
) -> None:
    """Create the work pool, register the scheduled retrain and monitor deployments, and run a worker on it."""
    _check_task(task)
    if not os.environ.get("PREFECT_API_URL"):
        _fail("a worker needs a Prefect server: set PREFECT_API_URL (`popularity stack up` starts one)", 2)
    settings = load_settings()
    from flows.schedules import register_on_pool, run_worker

    pool = pool or settings.stack.pool
    names = register_on_pool(pool, task, settings)
    console.print(f"registered {', '.join(names)} on pool {pool}; starting its worker")
    run_worker(pool, healthcheck)


stack_app = typer.Typer(help="The team stack on this machine: MLflow and Prefect on PostgreSQL, a worker, the "
                             "service.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


def _stack(task: str = "binary"):
    from flows.stack import Stack

    return Stack(load_settings(), task)


@stack_app.command("up")
def stack_up(task: TaskOpt = "binary", as_json: JsonOpt = False) -> None:
    """Start MLflow, Prefect, a worker with the scheduled deployments, and the service, as local processes."""
    _check_task(task)
    from flows.stack import StackError

    stack = _stack(task)
    try:
        status = stack.up(on_progress=lambda line: console.print(f"started {line}"))
    except StackError as exc:
        _fail(str(exc))
    _print_status(status)
    console.print('Use it from this shell: [bold]eval "$(popularity stack env)"[/]; stop it: popularity stack down')
    _emit(status, as_json)


@stack_app.command("status")
def stack_status(as_json: JsonOpt = False) -> None:
    """Each part's health and URL; exits 1 unless every part is healthy."""
    status = _stack().status()
    _print_status(status)
    _emit(status, as_json)
    if not status["running"]:
        raise typer.Exit(1)


@stack_app.command("down")
def stack_down(as_json: JsonOpt = False) -> None:
    """Stop every part of the stack (the databases and artifacts stay)."""
    summary = _stack().down()
    console.print(f"stopped {', '.join(summary['stopped']) or 'nothing (the stack was not running)'}")
    _emit(summary, as_json)


@stack_app.command("env")
def stack_env() -> None:
    """Shell exports that point popularity, MLflow and Prefect commands at the running stack."""
    from flows.stack import StackError

    try:
        environment = _stack().environment()
    except StackError as exc:
        _fail(str(exc))
    for name, value in environment.items():
        print(f"export {name}={shlex.quote(value)}")


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


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    url: Annotated[str | None, typer.Option(help="A running service; in process when omitted.")] = None,
    task: TaskOpt = "binary",
    as_json: JsonOpt = False,
) -> None:
    """Score images through a running service, or in process with the champion."""
    settings = load_settings()
    results = []
    if url:
        import httpx

        with httpx.Client(timeout=60) as client:
            for path in images:
                response = client.post(f"{url.rstrip('/')}/predict", files={"image": (path.name, path.read_bytes())})
                body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                    else {"error": response.text}
                results.append({"image": str(path), "status": response.status_code, **body})
    else:
        import mlflow

        from pipelines.data.images import ImageError, decode

        model = mlflow.pyfunc.load_model(f"models:/{settings.model_name(task)}@champion").unwrap_python_model()
        for path in images:
            try:
                img, _ = decode(path.read_bytes(), settings.images.max_bytes, settings.images.max_pixels)
            except ImageError as exc:
                results.append({"image": str(path), "error": str(exc)})
                continue
            row = model.predict_images([img]).iloc[0]
            results.append({"image": str(path), "score": float(row["score"]), "label": int(row["label"])})
    for r in results:
        console.print(f"{r['image']}: " + (f"score {r['score']:.3f} label {r['label']}" if "score" in r
                                           else f"[red]{r.get('error')}[/]"))
    _emit({"predictions": results}, as_json)
    if any("score" not in r for r in results):
        raise typer.Exit(1)


@app.command()
def monitor(
    task: TaskOpt = "binary",
    retrain: Annotated[bool, typer.Option(help="Start retraining on drift (once per cooldown).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Compare recent requests with the champion's training reference; may trigger retraining."""
    load_settings()
    from flows.monitor import monitor_flow

    summary = monitor_flow(task=task, retrain=retrain)
    console.print(summary["message"])
    if summary["retraining"]:
        console.print(summary["retraining"]["message"])
    _emit({k: summary[k] for k in ("window", "drifted_share", "drift", "retrain_triggered", "retraining", "report",
                                   "message")}, as_json)


@app.command()
def schedule(
    task: TaskOpt = "binary",
    retrain_cron: Annotated[str | None, typer.Option(help="Retraining cron (default weekly, from settings).")] = None,
    monitor_cron: Annotated[str | None, typer.Option(help="Monitoring cron (default hourly, from settings).")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server started when PREFECT_API_URL "
                                           "is unset.")] = 4200,
) -> None:
    """Register the retraining and monitoring deployments with their schedules and serve them."""
    _check_task(task)
    settings = load_settings()
    from flows.schedules import serve_schedules

    serve_schedules(task, settings, port=port, retrain_cron=retrain_cron, monitor_cron=monitor_cron)


@app.command()
def model(task: TaskOpt = "binary", as_json: JsonOpt = False) -> None:
    """Show the current champion: family, version, test metrics next to the baseline."""
    settings = load_settings()
    from pipelines import registry

    try:
        summary = registry.champion_summary(task, settings)
    except (LookupError, registry.RegistryUnavailable) as exc:
        _fail(str(exc))
    console.print(_champion_table(summary))
    _emit(summary, as_json)


@app.command()
def ui(mlflow_port: int = 5000, prefect_port: int = 4200) -> None:
    """Open the MLflow UI (and the Prefect UI) on the home's stores; Ctrl-C stops both."""
    settings = load_settings()
    env = {**os.environ, "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(prefect_port)}
    processes = [
        subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.tracking_uri,
                          "--host", "127.0.0.1", "--port", str(mlflow_port)]),
        subprocess.Popen([sys.executable, "-m", "prefect", "server", "start"], env=env),
    ]
    console.print(f"MLflow UI: http://127.0.0.1:{mlflow_port}   Prefect UI: http://127.0.0.1:{prefect_port}")
    try:
        for p in processes:
            p.wait()
    except KeyboardInterrupt:
        for p in processes:
            p.terminate()


def main() -> None:
    app()


if __name__ == "__main__":
    main()

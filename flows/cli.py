"""The ``popularity`` command: one subcommand per flow, ``--json`` for scripts.

Settings are exported to the environment before Prefect, MLflow or BentoML is imported, so every
file they write lands under ``POPULARITY_HOME``. Exit codes: 0 ok, 1 refused or failed, 2 usage error;
every error is one line on stderr (``--debug`` adds the traceback) and, under ``--json``,
``{"error": ..., "kind": ...}`` as the last line on stdout.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import shlex
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
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


class CommandError(Exception):
    """An error the user can act on; ``main`` prints it as one line and exits with ``code``. ``details``
    join the JSON line (a refused promotion still says which version and why)."""

    def __init__(self, message: str, code: int = 1, kind: str = "failed", details: dict | None = None):
        super().__init__(message)
        self.code, self.kind, self.details = code, kind, details or {}


def _fail(message: str, code: int = 1, kind: str | None = None, details: dict | None = None) -> NoReturn:
    raise CommandError(message, code, kind or ("usage" if code == 2 else "failed"), details)


# Exceptions that reach ``main`` unhandled, by kind; looked up only in modules already imported, so
# reporting an error never imports MLflow or httpx.
_KINDS = (("pipelines.registry", "RegistryUnavailable", "unavailable"),
          ("httpx", "TransportError", "unavailable"),
          ("pipelines.data.verdicts", "FailedValidation", "refused"),
          ("pipelines.data.images", "ImageError", "invalid_input"),
          ("builtins", "LookupError", "not_found"))


def _kind(exc: BaseException) -> str:
    for module, name, kind in _KINDS:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return kind
    return "failed"


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


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (also POPULARITY_DEBUG=1; "
                                                        "`main` reads it anywhere on the line).")] = False,
) -> None:
    """Predict how well an image will do online."""


def _reuse_prefect() -> None:
    """Flows report to this home's running Prefect server when there is one, else to a temporary one
    that stops with the command (see ``flows/prefect_api.py``)."""
    from flows.prefect_api import use_running_api

    use_running_api(load_settings())


def _open_snapshot(snapshot: str | None) -> None:
    """A missing snapshot is a usage error, answered before Prefect starts."""
    settings = load_settings()
    from pipelines.data.snapshots import Snapshot

    try:
        Snapshot.open(settings.datasets_dir, snapshot)
    except FileNotFoundError as exc:
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
    _reuse_prefect()
    from flows.demo import run_flow

    _check_runner(runner)
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = run_flow(source=source, task=task, quick=quick, port=port, runner=runner)
    except (LookupError, FailedValidation) as exc:
        _fail(str(exc), kind="refused")
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
        _reuse_prefect()
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
    _open_snapshot(snapshot)
    _reuse_prefect()
    from flows.data import validate_flow
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = validate_flow(snapshot=snapshot)
    except FailedValidation as exc:
        _fail(str(exc), kind="refused")
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
    _open_snapshot(snapshot)
    _reuse_prefect()
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
        _fail(str(exc), kind="refused")
    _emit(summary, as_json)


@app.command()
def promote(task: TaskOpt = "binary",
            rollback: Annotated[bool, typer.Option(help="Restore the previous champion.")] = False,
            as_json: JsonOpt = False) -> None:
    """Re-run the promotion gate on the challenger, or roll back the champion."""
    _check_task(task)
    load_settings()
    _reuse_prefect()
    from flows.training import promote_flow

    try:
        summary = promote_flow(task=task, rollback=rollback)
    except LookupError as exc:
        _fail(str(exc), kind="not_found")
    if summary.get("promoted") is False:  # the gate refused: a script must not read that as success
        _fail(summary["reason"], kind="refused", details=summary)
    console.print(summary.get("reason") or f"champion is now version {summary['version']}")
    _emit(summary, as_json)


@app.command()
def serve(port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
          host: Annotated[str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1).")] = None,
          insecure: Annotated[bool, typer.Option(help="Serve off loopback without POPULARITY_API_KEY: anyone who "
                                                      "reaches the address may score and /reload.")] = False,
          ) -> None:
    """Serve the champion with BentoML in the foreground; it follows the registry's champion alias."""
    settings = load_settings()
    port = port or settings.serving.port
    host = host or settings.serving.host
    if settings.api_key is None and not insecure and not _loopback(host):
        _fail(f"refusing to serve on {host} without an API key: set POPULARITY_API_KEY, or pass --insecure "
              "to serve it open", 2)
    repo = Path(__file__).resolve().parents[1]
    # exec, not a child: as a container's PID 1 BentoML itself must get SIGTERM
    os.execv(sys.executable, [sys.executable, "-m", "bentoml", "serve", "serving.service:Popularity",
                              "--host", host, "--port", str(port), "--working-dir", str(repo)])


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


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


prefect_app = typer.Typer(help="A Prefect server under the home that flow commands reuse (no start-up per "
                                "command).", no_args_is_help=True)
app.add_typer(prefect_app, name="prefect")


@prefect_app.command("up")
def prefect_up(as_json: JsonOpt = False) -> None:
    """Start a Prefect server under the home, left running; `run`, `collect`, `train`... report to it."""
    from flows.prefect_api import PrefectServer

    part = PrefectServer(load_settings()).up()
    console.print(f"Prefect server at {part.url} (log: {part.log}); commands of this home now use it; "
                  "stop it with `popularity prefect down`")
    _emit({"url": part.url, "pid": part.pid, "log": part.log}, as_json)


@prefect_app.command("down")
def prefect_down(as_json: JsonOpt = False) -> None:
    """Stop the Prefect server that `popularity prefect up` started (its runs stay in the home)."""
    from flows.prefect_api import PrefectServer

    stopped = PrefectServer(load_settings()).down()
    console.print("stopped the Prefect server" if stopped else "no Prefect server was running")
    _emit({"stopped": stopped}, as_json)


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
        _fail(str(exc), kind="not_found")
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
    _check_task(task)
    settings = load_settings()
    results = []
    if url:
        import httpx

        with httpx.Client(timeout=60) as client:
            for path in images:
                try:
                    response = client.post(f"{url.rstrip('/')}/predict",
                                           files={"image": (path.name, path.read_bytes())})
                except httpx.TransportError as exc:
                    _fail(f"no service answered at {url}: {exc}; start one with `popularity serve`",
                          kind="unavailable")
                body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                    else {"error": response.text}
                results.append({"image": str(path), "status": response.status_code, **body})
    else:
        import mlflow

        from pipelines import registry
        from pipelines.data.images import ImageError, decode

        name = settings.model_name(task)
        if registry.alias_version(registry.client(settings), name, registry.CHAMPION) is None:
            _fail(f"{name} has no champion yet; run `popularity run` or `popularity promote`", kind="not_found")
        model = mlflow.pyfunc.load_model(f"models:/{name}@{registry.CHAMPION}").unwrap_python_model()
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
    retrain: Annotated[bool, typer.Option(help="Start retraining on drift or decay (once per cooldown).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Compare recent requests with the champion's training reference, and its predictions with the
    outcomes that came back (`popularity feedback`); drift or decay may trigger retraining."""
    load_settings()
    _reuse_prefect()
    from flows.monitor import monitor_flow

    summary = monitor_flow(task=task, retrain=retrain)
    console.print(summary["message"])
    console.print(summary["performance"]["message"])
    if summary["retraining"]:
        console.print(summary["retraining"]["message"])
    _emit({k: summary[k] for k in ("window", "drifted_share", "drift", "performance", "retrain_triggered",
                                   "retraining", "report", "message")}, as_json)


@app.command()
def feedback(
    source: Annotated[str, typer.Option(help="A collection source whose rows carry post_id or prediction_id and "
                                             "engagement counts (likes, views, views_dN, …), e.g. "
                                             "manifest:outcomes.csv.")],
    allow_private: Annotated[bool, typer.Option(help="Allow downloads from private and loopback addresses.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record realized engagement against the predictions it belongs to; bad rows are rejected with reasons."""
    settings = load_settings().for_collection(allow_private)
    from pipelines.data.sources import SpecError, parse_spec

    try:
        spec = parse_spec(source, settings)
    except SpecError as exc:
        _fail(str(exc), 2)
    from monitoring import feedback as outcomes

    rows, images, rejects = outcomes.read_source(spec, settings, progress=not as_json)
    result = outcomes.record(rows, settings, images, rejects)
    console.print(result.message)
    if result.rejected_path:
        console.print(f"rejected rows and their reasons: {result.rejected_path}")
    _emit(result.summary(), as_json)
    if not result.accepted:
        raise typer.Exit(1)


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
    except LookupError as exc:
        _fail(str(exc), kind="not_found")
    except registry.RegistryUnavailable as exc:
        _fail(str(exc), kind="unavailable")
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become one line (and a JSON line under ``--json``), never a traceback
    unless ``--debug`` (anywhere on the line) or ``POPULARITY_DEBUG=1`` asks for it."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("POPULARITY_DEBUG", "") not in ("", "0")
    args = ["--debug"] * debug + [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="popularity", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except typer.TyperException as exc:  # Typer's usage errors: unknown options, missing arguments
        if type(exc).__name__ == "NoArgsIsHelpError":  # ``popularity`` alone: the help, as Typer shows it
            exc.show()
            return exc.exit_code
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        error = CommandError(exc.format_message() + hint, exc.exit_code, "usage" if exc.exit_code == 2 else "failed")
        caught: BaseException = exc
    except CommandError as exc:
        error = caught = exc
    except KeyboardInterrupt as exc:
        error, caught = CommandError("interrupted", 130, "interrupted"), exc
    except Exception as exc:  # noqa: BLE001 (the last line of defence: one line, not a traceback)
        lines = str(exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        error = CommandError(f"{detail} ({type(exc).__name__}; `--debug` shows the traceback)", 1, _kind(exc))
        caught = exc
    if debug:
        traceback.print_exception(caught)
    console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True, highlight=False)
    if "--json" in args:
        print(json.dumps(_finite({**error.details, "error": str(error), "kind": error.kind}), default=str))
    return error.code


if __name__ == "__main__":
    sys.exit(main())

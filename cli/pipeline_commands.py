"""The pipeline's commands: the whole run, and each stage on its own (collect, validate, train,
promote), plus ``model``, the champion they leave behind, and ``demo-data``, fresh demo data for a
retrain source to learn from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.options import (JsonOpt, RunnerOpt, TaskOpt, check_models, check_runner, check_task, open_snapshot,
                         reuse_prefect)
from cli.output import console, emit, fail
from pipelines.settings import load_settings
from pipelines.training.defaults import DEFAULT_MODELS_HELP as DEFAULT_MODELS

app = typer.Typer()


def champion_table(champion: dict) -> Table:
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
    models: Annotated[str | None, typer.Option(help=f"Comma-separated candidates; {DEFAULT_MODELS}.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The whole pipeline flow: collect → validate → train → promote → serve → predict → monitor."""
    check_task(task)
    check_models(models)
    settings = load_settings()
    from pipelines.data.sources import SpecError, parse_spec

    try:
        parse_spec(source, settings)
    except SpecError as exc:
        fail(str(exc), 2)
    reuse_prefect()
    from flows.run_flow import run_flow

    check_runner(runner)
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = run_flow(source=source, task=task, quick=quick, port=port, runner=runner,
                           models=models.split(",") if models else None)
    except (LookupError, FailedValidation) as exc:
        fail(str(exc), kind="refused")
    console.print(f"Data: {summary['validation']['message']}")
    champion = summary["champion"]
    console.print(champion_table(champion))
    service = summary["service"]
    console.print(f"Service: answered {service['ok']}/{service['sent']} predictions at {service['url']} "
                  f"(a non-image got HTTP {service['non_image_status']}); start it again with "
                  f"[bold]popularity serve[/] (http://{settings.serving.host}:{settings.serving.port})")
    console.print(f"Drift on held-out images: {summary['monitor']['message']}")
    shifted = summary["shifted"]
    console.print(f"Drift on the same images at {shifted['brightness']:.0%} brightness: {shifted['monitor']['message']}")
    console.print(f"MLflow UI and Prefect UI: [bold]popularity ui[/] (home: {settings.root})")
    emit(summary, as_json)


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
    from pipelines.data.snapshots import SnapshotNameError, check_name
    from pipelines.data.sources import SpecError, parse_spec

    if label is not None and label not in SCHEMES:
        fail(f"unknown --label {label!r}; choose from {sorted(SCHEMES)}", 2)
    check_runner(runner)
    try:
        if name is not None:
            check_name(name)
        parse_spec(source, settings)
        reuse_prefect()
        from flows.data_flows import collect_flow

        summary = collect_flow(source=source, name=name, label=label, drop_outliers=drop_outliers, runner=runner,
                               allow_private=allow_private, allow_outside_paths=allow_outside_paths)
    except (SpecError, LabelError, SnapshotNameError) as exc:
        fail(str(exc), 2)
    console.print(f"snapshot {summary['snapshot']} at {summary['path']}: {summary['items']} items, "
                  f"{summary['rejects']} rejects {summary.get('reject_reasons', {})}, labels {summary['labels']}")
    emit(summary, as_json)


@app.command()
def validate(snapshot: Annotated[str | None, typer.Argument(help="Snapshot id, name or path.")] = None,
             as_json: JsonOpt = False) -> None:
    """Run the Great Expectations suites; exits non-zero on a critical failure."""
    open_snapshot(snapshot)
    reuse_prefect()
    from flows.data_flows import validate_flow
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = validate_flow(snapshot=snapshot)
    except FailedValidation as exc:
        fail(str(exc), kind="refused")
    console.print(summary.get("message", summary))
    emit(summary, as_json)


@app.command()
def train(
    snapshot: Annotated[str | None, typer.Argument(help="Snapshot id, name or path (default: latest).")] = None,
    models: Annotated[str | None, typer.Option(help=f"Comma-separated candidates; {DEFAULT_MODELS}.")] = None,
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
    check_task(task)
    check_runner(runner)
    check_models(models)
    open_snapshot(snapshot)
    reuse_prefect()
    from flows.training_flows import train_flow
    from pipelines.data.verdicts import FailedValidation

    try:
        summary = train_flow(snapshot=snapshot, task=task, quick=quick, runner=runner,
                             models=models.split(",") if models else None,
                             options={"backbone": backbone, "split": split, "repeats": repeats,
                                      "require_faces": require_faces, "tune": tune, "tune_budget_s": tune_budget})
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), 2)
    except FailedValidation as exc:
        fail(str(exc), kind="refused")
    emit(summary, as_json)


@app.command()
def promote(task: TaskOpt = "binary",
            rollback: Annotated[bool, typer.Option(help="Restore the previous champion.")] = False,
            as_json: JsonOpt = False) -> None:
    """Re-run the promotion gate on the challenger, or roll back the champion."""
    check_task(task)
    settings = load_settings()
    from pipelines import registry

    try:  # in seconds, before a Prefect server starts or a flow logs MLflow's retries
        registry.require_reachable(settings)
    except registry.RegistryUnavailable as exc:
        fail(str(exc), kind="unavailable")
    reuse_prefect()
    from flows.training_flows import promote_flow

    try:
        summary = promote_flow(task=task, rollback=rollback)
    except LookupError as exc:
        fail(str(exc), kind="not_found")
    if summary.get("promoted") is False:  # the gate refused: a script must not read that as success
        fail(summary["reason"], kind="refused", details=summary)
    console.print(summary.get("reason") or f"champion is now version {summary['version']}")
    emit(summary, as_json)


@app.command()
def model(task: TaskOpt = "binary", as_json: JsonOpt = False) -> None:
    """Show the current champion: family, version, test metrics next to the baseline."""
    settings = load_settings()
    from pipelines import registry

    try:
        registry.require_reachable(settings)
        summary = registry.champion_summary(task, settings)
    except LookupError as exc:
        fail(str(exc), kind="not_found")
    except registry.RegistryUnavailable as exc:
        fail(str(exc), kind="unavailable")
    console.print(champion_table(summary))
    if summary.get("promoted_without_gate"):  # the alias moved by hand, e.g. MLflow's own Promote button
        console.print(f"[bold red]warning:[/] {escape(summary['gate_warning'])}")
    emit(summary, as_json)


@app.command("demo-data")
def demo_data(
    folder: Annotated[Path, typer.Argument(help="The incoming folder (created): draw-NNNN/ photos and manifest.csv.",
                                           file_okay=False)],
    draw: Annotated[int | None, typer.Option(help="Which draw of the generator (default: the folder's next; "
                                                  "draw 0 is the demo's own data).")] = None,
    shift: Annotated[str, typer.Option(help="none, dark (photos at 40% brightness), city (a scene category the "
                                            "demo never drew) or taste (the audience likes other photos).")] = "none",
    count: Annotated[int | None, typer.Option(help="Photos in the draw (default: demo.size, 2,000).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the demo generator's next draw into FOLDER as fresh data to retrain on: photos plus manifest.csv,
    replaced whole (point POPULARITY_DRIFT__RETRAIN_SOURCE at manifest:FOLDER/manifest.csv)."""
    settings = load_settings()
    from pipelines.data.sources import SpecError
    from pipelines.data.sources.demo import write_draw

    try:
        summary = write_draw(folder, settings, draw=draw, shift=shift, n=count)
    except SpecError as exc:
        fail(str(exc), 2)
    console.print(f"draw {summary['draw']} ({summary['shift']}): {summary['photos']} photos in {summary['images']}, "
                  f"manifest {summary['manifest']}; retrain from it with "
                  f"POPULARITY_DRIFT__RETRAIN_SOURCE=manifest:{Path(summary['manifest']).resolve()}")
    emit(summary, as_json)

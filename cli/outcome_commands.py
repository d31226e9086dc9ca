"""What happens after serving: ``feedback`` records the realized engagement of served posts, ``monitor``
checks input drift and realized performance (and may start retraining)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.options import JsonOpt, TaskOpt, reuse_prefect
from cli.output import console, emit, fail
from pipelines.settings import load_settings

app = typer.Typer()


@app.command()
def monitor(
    task: TaskOpt = "binary",
    retrain: Annotated[bool, typer.Option(help="Start retraining on drift or decay (once per cooldown).")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Compare recent requests with the champion's training reference, and its predictions with the
    outcomes that came back (`popularity feedback`); drift or decay may trigger retraining, and a champion
    doing worse than the one it replaced (watched in shadow) is rolled back, and a challenger waiting for its
    live outcomes (`POPULARITY_PROMOTION__LIVE_OUTCOMES`) is promoted or refused once they are in."""
    load_settings()
    reuse_prefect()
    from flows.monitoring_flows import monitor_flow

    summary = monitor_flow(task=task, retrain=retrain)
    console.print(summary["message"])
    console.print(summary["performance"]["message"])
    if summary["performance"].get("estimate"):
        console.print(summary["performance"]["estimate"]["message"])
    shadow = summary["performance"].pop("shadow", None)  # the challenger in shadow: a block of its own
    if shadow:
        console.print(shadow["message"])
        if shadow.get("drift"):
            console.print(shadow["drift"]["message"])
    if summary["rollback"]:
        console.print(summary["rollback"]["message"])
    if summary["promotion"]:
        console.print(summary["promotion"]["message"])
    if summary["retraining"]:
        console.print(summary["retraining"]["message"])
    keys = ("window", "drifted_share", "drift", "performance", "retrain_triggered", "retraining", "rollback",
            "promotion", "report", "message")
    emit({**{k: summary[k] for k in keys}, "shadow": shadow}, as_json)


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
        fail(str(exc), 2)
    from monitoring import feedback as outcomes

    rows, images, rejects = outcomes.read_source(spec, settings, progress=not as_json)
    result = outcomes.record(rows, settings, images, rejects)
    console.print(result.message)
    if result.rejected_path:
        console.print(f"rejected rows and their reasons: {result.rejected_path}")
    emit(result.summary(), as_json)
    if not result.accepted:
        raise typer.Exit(1)

"""The training flows: train every candidate as a child MLflow run and register the best; promote it
through the gate (or roll the champion back).

Between tasks only paths, ids and small dicts travel, so nothing heavy is hashed for caching;
MLflow runs are passed by id because MLflow's active run is thread-local.
"""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import alerts, approval
from flows.data_flows import check_snapshot
from flows.scaleout import compute_features
from flows.stale import claim, take_over
from monitoring import monitor
from pipelines import model_card, promotion, registry, tracking
from pipelines.data import verdicts
from pipelines.data.snapshots import Snapshot
from pipelines.settings import load_settings
from pipelines.training.candidates import check_models, image_feature_groups
from pipelines.training.defaults import default_models
from pipelines.training.data import TrainingData
from pipelines.training.report import summarise
from pipelines.training.runs import Candidate, train_candidate
from pipelines.training.train import with_options
from validation.runner import validate_features, validate_predictions

PIPELINE_EXPERIMENT = "popularity"


@task(cache_policy=NO_CACHE)
def candidate_run(name: str, data: TrainingData, parent_run_id: str, quick: bool) -> Candidate:
    return train_candidate(name, data, parent_run_id, quick)


@task(cache_policy=NO_CACHE)
def register_best(report: dict, task_name: str) -> dict:
    best = Candidate(**report["best"])
    version = registry.register_challenger(best, task_name, report["snapshot"], report["baseline"], report["oracle"],
                                           load_settings(), report.get("label"))
    return {"name": version.name, "version": version.version, "candidate": best.name}


def open_parent_run(settings, run_name: str, tags: dict | None = None) -> str:
    """A parent MLflow run for a flow's steps, closed at once: its steps reopen it by id. Its name ends with
    the minute it started (``retrain-drift-2026-12-06T01:30``), so the runs table tells runs apart."""
    experiment = tracking.experiment(settings, PIPELINE_EXPERIMENT)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
    with tracking.start_run(experiment_id=experiment, run_name=f"{run_name}-{started}") as run:
        if tags:
            mlflow.set_tags(tags)
        return run.info.run_id


@task(cache_policy=NO_CACHE)
def check_features(data: TrainingData, models: list[str]) -> dict | None:
    """The features suite on the feature table the candidates will read, before any of them trains."""
    groups = image_feature_groups(models)
    if not groups:
        return None
    features = data.features(data.featurizer(groups)).loc[data.manifest["image_id"]]
    report = validate_features(features.rename_axis("image_id").reset_index(), None, data.settings)
    if not report.success:
        raise verdicts.FailedValidation(f"feature validation failed: {report.message}{report.docs_hint}")
    return report.summary()


def predictions_suite(task_name: str, settings) -> promotion.PredictionsCheck:
    """The gate's last check: the Great Expectations predictions suite on the challenger's test scores."""
    def check(scores):
        report = validate_predictions(scores, task_name, settings)
        return report.success, f"{report.message}{report.docs_hint}"
    return check


@flow(name="train", log_prints=True)
def train_flow(snapshot: str | None = None, task: str = "binary", models: list[str] | None = None,
               quick: bool = False, parent_run_id: str | None = None, runner: str = "local",
               options: dict | None = None) -> dict:
    """Train every candidate as a child MLflow run, compare them, register the best as challenger.

    ``options`` overrides training settings for this run (backbone, split, repeats, require_faces,
    tune, tune_budget_s)."""
    settings = with_options(load_settings(), **(options or {}))
    take_over(settings)  # runs that a killed process left RUNNING are marked failed first
    snap = Snapshot.open(settings.datasets_dir, snapshot)
    if runner != "local":  # the feature tables land in the cache that the candidates read
        compute_features(str(snap.path), runner)
    models = check_models(models or settings.train.models or default_models(snap.manifest))
    parent_run_id = parent_run_id or open_parent_run(settings, f"train-{task}", {"task": task, "trigger": "manual"})
    if verdicts.load(settings.quarantine_dir, snap.id) is None:  # training reads only what validation passed
        check_snapshot(str(snap.path), parent_run_id)
    data = TrainingData(snap, task, settings)
    check_features(data, models)
    candidates = [candidate_run(name, data, parent_run_id, quick) for name in models]
    report = summarise(data, candidates, parent_run_id)
    table = report.table.to_markdown(index=False, floatfmt=".3f")
    print(f"\n{table}\n")
    create_markdown_artifact(key="comparison", markdown=f"## Candidates on {snap.id}\n\n{table}",
                             description="all candidates on the frozen test split")
    summary = report.summary()
    summary["registered"] = register_best(summary, task)
    return summary


@flow(name="promote", log_prints=True)
def promote_flow(task: str = "binary", rollback: bool = False) -> dict:
    """Re-run the promotion gate on the challenger (with `promotion.live_outcomes`, also on the live outcomes
    of the requests it scored in shadow), or roll the champion back."""
    settings = load_settings()
    claim()  # labelled with its process, as every flow run a killed process could leave behind
    if rollback:
        summary = {"rolled_back_to": registry.rollback(task, settings), **registry.champion_summary(task, settings)}
        alerts.announce(alerts.ROLLBACK, summary["name"], {"message": f"{summary['name']} rolled back by hand to "
                                                                      f"v{summary['rolled_back_to']}"})
        return summary
    live = monitor.live_evidence(task, settings) if settings.promotion.live_outcomes > 0 else None
    approve = approval.ask_in_prefect if settings.promotion.approval == "required" else None  # a person signs
    result = promotion.promote(task, settings, predictions_suite(task, settings), live, approve)
    print(result.reason)
    return {"promoted": result.passed, "version": result.version, "reason": result.reason,
            "checks": result.checks, "numbers": result.numbers, "thresholds": result.thresholds,
            "loosened": result.loosened, "table": model_card.markdown_table(result.table())}


def verdict_markdown(trained: dict, promoted: dict, heading: str) -> str:
    """What a person opening the top-level flow run wants to see: the verdict, the gate's checks beside
    their thresholds, and every candidate's validation and test metrics beside the baseline."""
    verdict = "**Promoted**" if promoted.get("promoted") else "**Not promoted** (the champion stays)"
    registered = trained.get("registered", {})
    comparison = model_card.markdown_table(pd.DataFrame(trained.get("table", [])), ".3f")
    return (f"# {heading}\n\n{verdict}: {registered.get('name')} v{registered.get('version')} "
            f"(`{registered.get('candidate')}`) — {promoted.get('reason', '')}\n\n## The gate\n\n"
            f"{promoted.get('table', '')}\n\n## Candidates on snapshot {trained.get('snapshot')}\n\n{comparison}\n")

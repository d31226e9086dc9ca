"""Prefect flows: they only wire the steps of ``pipelines/``, ``validation/`` and ``serving/``.

Between tasks only paths, ids and small dicts travel, so nothing heavy is hashed for caching;
MLflow runs are passed by id because MLflow's active run is thread-local.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import mlflow
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from pipelines import registry, training, tracking
from pipelines.collect import collect
from pipelines.settings import Settings, get_settings
from pipelines.snapshots import Snapshot
from pipelines.sources import parse_spec
from serving import monitor
from flows.scaleout import compute_features, fetch_items
from serving.process import ServiceProcess

PIPELINE_EXPERIMENT = "popularity"


def _settings() -> Settings:
    settings = get_settings()
    settings.export_environment()
    return settings


@task(cache_policy=NO_CACHE)
def collect_snapshot(source: str, name: str | None, label: str | None, drop_outliers: bool,
                     runner: str = "local") -> str:
    spec = parse_spec(source)
    items = fetch_items(source, runner) if runner != "local" else None
    return str(collect(spec, _settings(), name=name, label=label, drop_outliers=drop_outliers, items=items).path)


@flow(name="collect", log_prints=True)
def collect_flow(source: str = "demo", name: str | None = None, label: str | None = None,
                 drop_outliers: bool = False, runner: str = "local") -> dict:
    """Collect a source into an immutable snapshot; returns the snapshot summary."""
    return Snapshot(Path(collect_snapshot(source, name, label, drop_outliers, runner))).summary()


@task(cache_policy=NO_CACHE)
def validate_snapshot(snapshot_path: str, parent_run_id: str | None = None) -> dict:
    from validation import validate_snapshot as run_suites

    settings = _settings()
    report = run_suites(Snapshot(Path(snapshot_path)), settings)
    if parent_run_id:
        with mlflow.start_run(run_id=parent_run_id):
            for path in (report.results_path, report.docs_path):
                if path and Path(path).exists():
                    (mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact)(path, "validation")
    create_markdown_artifact(
        key="validation", description="Great Expectations results",
        markdown=f"## Validation of {Path(snapshot_path).name}\n\n{report.message}\n\n"
                 f"Data Docs: `{report.docs_path}`",
    )
    if not report.success:
        raise RuntimeError(f"validation failed: {report.message}")
    return report.summary()


@flow(name="validate", log_prints=True)
def validate_flow(snapshot: str | None = None) -> dict:
    """Run the Great Expectations suites on a snapshot (the latest by default)."""
    return validate_snapshot(str(Snapshot.open(_settings().datasets_dir, snapshot).path))


@task(cache_policy=NO_CACHE)
def train_candidate(name: str, data: training.TrainingData, parent_run_id: str, quick: bool) -> training.Candidate:
    return training.train_candidate(name, data, parent_run_id, quick)


@task(cache_policy=NO_CACHE)
def register_best(report: dict, task_name: str) -> dict:
    settings = _settings()
    best = training.Candidate(**report["best"])
    version = registry.register_challenger(best, task_name, report["snapshot"], report["baseline"], report["oracle"],
                                           settings)
    return {"name": version.name, "version": version.version, "candidate": best.name}


@flow(name="train", log_prints=True)
def train_flow(snapshot: str | None = None, task: str = "binary", models: list[str] | None = None,
               quick: bool = False, parent_run_id: str | None = None, runner: str = "local",
               options: dict | None = None) -> dict:
    """Train every candidate as a child MLflow run, compare them, register the best as challenger.

    ``options`` overrides training settings for this run (backbone, split, repeats, require_faces,
    tune, tune_budget_s)."""
    settings = training.with_options(_settings(), **(options or {}))
    snap = Snapshot.open(settings.datasets_dir, snapshot)
    if runner != "local":  # the feature tables land in the cache that the candidates read
        compute_features(str(snap.path), runner)
    models = models or settings.train.models
    training.check_models(models)
    if parent_run_id is None:
        experiment = tracking.experiment(settings, PIPELINE_EXPERIMENT)
        with mlflow.start_run(experiment_id=experiment, run_name=f"train-{task}") as run:
            parent_run_id = run.info.run_id
    data = training.TrainingData(snap, task, settings)
    candidates = [train_candidate(name, data, parent_run_id, quick) for name in models]
    report = training.summarise(data, candidates, parent_run_id)
    table = report.table.to_markdown(index=False, floatfmt=".3f")
    print(f"\n{table}\n")
    create_markdown_artifact(key="comparison", markdown=f"## Candidates on {snap.id}\n\n{table}",
                             description="all candidates on the frozen test split")
    summary = report.summary()
    summary["registered"] = register_best(summary, task)
    return summary


@flow(name="promote", log_prints=True)
def promote_flow(task: str = "binary", rollback: bool = False) -> dict:
    """Re-run the promotion gate on the challenger (or roll the champion back)."""
    settings = _settings()
    if rollback:
        return {"rolled_back_to": registry.rollback(task, settings), **registry.champion_summary(task, settings)}
    result = registry.promote(task, settings)
    print(result.reason)
    return {"promoted": result.passed, "version": result.version, "reason": result.reason,
            "checks": result.checks, "numbers": result.numbers}


@task(cache_policy=NO_CACHE)
def probe_service(url: str, snapshot_path: str, requests: int) -> dict:
    """Send held-out test images to the running service, as a client would."""
    snap = Snapshot(Path(snapshot_path))
    test = snap.manifest[snap.manifest["split"] == "test"]
    rows = test.sample(min(requests, len(test)), random_state=0) if len(test) else test
    ok, errors, scores = 0, 0, []
    with httpx.Client(timeout=60) as client:
        for relative in rows["image_path"]:
            response = client.post(f"{url}/predict", files={"image": (Path(relative).name, snap.read_image(relative))})
            if response.status_code == 200:
                ok += 1
                scores.append(response.json()["score"])
            else:
                errors += 1
        bad = client.post(f"{url}/predict", files={"image": ("notes.jpg", b"this is not an image")})
    return {"url": url, "sent": len(rows), "ok": ok, "errors": errors, "non_image_status": bad.status_code,
            "mean_score": sum(scores) / len(scores) if scores else None}


def retrain_deployment(task: str) -> str:
    """The ``flow/deployment`` name that ``popularity schedule`` registers for retraining ``task``."""
    return f"retrain/popularity-{task}"


@flow(name="retrain", log_prints=True)
def retrain_flow(task: str = "binary", source: str | None = None, models: list[str] | None = None,
                 quick: bool | None = None, trigger: str = "manual", reason: str = "") -> dict:
    """Collect the source again (or reuse the latest snapshot), validate, train and promote.

    Unset arguments come from the drift settings, so a drift-started run is as cheap as configured.
    """
    settings = _settings()
    d = settings.drift
    source = source or d.retrain_source
    quick = d.retrain_quick if quick is None else quick
    with mlflow.start_run(experiment_id=tracking.experiment(settings, PIPELINE_EXPERIMENT),
                          run_name=f"retrain-{task}") as run:
        parent = run.info.run_id
        mlflow.set_tags({"trigger": trigger, "reason": reason[:500], "task": task, "source": source or "latest"})
    snapshot_path = (collect_snapshot(source, None, None, False) if source
                     else str(Snapshot.open(settings.datasets_dir).path))
    validation = validate_snapshot(snapshot_path, parent)
    trained = train_flow(snapshot=snapshot_path, task=task, models=models or d.retrain_models, quick=quick,
                         parent_run_id=parent)
    promotion = promote_flow(task=task)
    return {"mlflow_run_id": parent, "snapshot": Path(snapshot_path).name, "trigger": trigger,
            "validation": validation, "registered": trained["registered"], "promotion": promotion}


def _start_retraining(task: str, settings: Settings, reason: str) -> dict:
    """Start one retraining per cooldown: on the served deployment when one is registered, else here."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    cooldown = monitor.Cooldown(settings.monitoring_dir / f"retrain-{task}.json", settings.drift.cooldown_hours)
    claimed, message = cooldown.claim(reason)
    print(message)
    if not claimed:
        return {"started": False, "message": message}
    parameters = {"task": task, "trigger": "drift", "reason": reason}
    try:
        run = run_deployment(retrain_deployment(task), parameters=parameters, timeout=0, as_subflow=False)
    except ObjectNotFound:
        return {"started": True, "mode": "in-process", "message": message, **retrain_flow(**parameters)}
    except Exception:
        cooldown.release()
        raise
    return {"started": True, "mode": "deployment", "message": message, "flow_run_id": str(run.id)}


@flow(name="monitor", log_prints=True)
def monitor_flow(task: str = "binary", retrain: bool = True) -> dict:
    """Compare the latest window of served requests with the champion's reference; drift may retrain."""
    from prefect.events import emit_event

    settings = _settings()
    result, report_path = monitor.run(task, settings)
    print(result.message)
    create_markdown_artifact(key="drift", markdown=f"## Drift\n\n{result.message}\n\nReport: `{report_path}`")
    retraining = None
    if result.drift:
        emit_event("popularity.drift.detected",
                   resource={"prefect.resource.id": f"popularity.model.{settings.model_name(task)}"},
                   payload={"drifted_share": result.drifted_share, "window": result.window, "message": result.message})
        if retrain:
            retraining = _start_retraining(task, settings, result.message)
    return {**result.summary(), "report": str(report_path) if report_path else None,
            "retrain_triggered": bool(retraining and retraining["started"]), "retraining": retraining}


@flow(name="popularity-run", log_prints=True)
def run_flow(source: str = "demo", task: str = "binary", quick: bool = False, port: int = 3000,
             requests: int = 200, runner: str = "local") -> dict:
    """The whole pipeline: collect → validate → train → promote → serve → predict → monitor."""
    settings = _settings()
    experiment = tracking.experiment(settings, PIPELINE_EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment, run_name=f"pipeline-{task}") as run:
        parent = run.info.run_id
        mlflow.set_tags({"source": source, "task": task, "quick": str(quick)})
    snapshot_path = collect_snapshot(source, None, None, False, runner)
    snap = Snapshot(Path(snapshot_path))
    with mlflow.start_run(run_id=parent):
        mlflow.log_dict(snap.meta, "snapshot.json")
    validation = validate_snapshot(snapshot_path, parent)
    trained = train_flow(snapshot=snap.id, task=task, quick=quick, parent_run_id=parent, runner=runner)
    promotion = promote_flow(task=task)
    champion = registry.champion_summary(task, settings)
    service_log = settings.root / "logs" / "service.log"
    service_log.parent.mkdir(parents=True, exist_ok=True)
    with ServiceProcess(port=port, log_path=service_log) as service:
        probe = probe_service(service.url, snapshot_path, requests)
    drift = monitor_flow(task=task)
    summary = {"collect": snap.summary(), "validation": validation, "comparison": trained["table"],
               "promotion": promotion, "champion": champion, "service": probe, "monitor": drift,
               "mlflow_run_id": parent}
    with mlflow.start_run(run_id=parent):
        mlflow.log_text(json.dumps(summary, indent=2, default=str), "summary.json")
    return summary

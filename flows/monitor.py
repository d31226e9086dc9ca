"""The monitoring flows: check the latest request window for drift, and retrain (collect, validate,
train, promote) when drift or the schedule says so, at most once per cooldown."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.data import check_snapshot, collect_snapshot
from flows.training import open_parent_run, promote_flow, train_flow
from monitoring import monitor
from monitoring.cooldown import Cooldown
from pipelines.data.snapshots import Snapshot
from pipelines.settings import Settings, load_settings


def retrain_deployment(task: str) -> str:
    """The ``flow/deployment`` name that ``popularity schedule`` registers for retraining ``task``."""
    return f"retrain/popularity-{task}"


@flow(name="retrain", log_prints=True)
def retrain_flow(task: str = "binary", source: str | None = None, models: list[str] | None = None,
                 quick: bool | None = None, trigger: str = "manual", reason: str = "") -> dict:
    """Collect the source again (or reuse the latest snapshot), validate, train and promote.

    Unset arguments come from the drift settings, so a drift-started run is as cheap as configured.
    """
    settings = load_settings()
    d = settings.drift
    source = source or d.retrain_source
    quick = d.retrain_quick if quick is None else quick
    parent = open_parent_run(settings, f"retrain-{task}", {"trigger": trigger, "reason": reason[:500], "task": task,
                                                          "source": source or "latest"})
    snapshot_path = (collect_snapshot(source, None, None, False) if source
                     else str(Snapshot.open(settings.datasets_dir).path))
    validation = check_snapshot(snapshot_path, parent)
    trained = train_flow(snapshot=snapshot_path, task=task, models=models or d.retrain_models, quick=quick,
                         parent_run_id=parent)
    promoted = promote_flow(task=task)
    return {"mlflow_run_id": parent, "snapshot": Path(snapshot_path).name, "trigger": trigger,
            "validation": validation, "registered": trained["registered"], "promotion": promoted}


def _start_retraining(task: str, settings: Settings, reason: str) -> dict:
    """Start one retraining per cooldown: on the served deployment when one is registered, else here."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    cooldown = Cooldown(settings.monitoring_dir / f"retrain-{task}.json", settings.drift.cooldown_hours)
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

    settings = load_settings()
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

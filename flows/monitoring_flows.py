"""The monitoring flows: check the latest request window for input drift and the outcomes that came
back for decay, and retrain (collect fresh data and the feedback rows, validate, train, promote) when
either, or the schedule, says so, at most once per cooldown; roll the champion back instead when the
champion it replaced, watched in shadow, did better on the same outcomes by the decay margin; and run the
gate again on a challenger that waited for its ``promotion.live_outcomes`` once they are in."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows import alerts
from flows.data_flows import check_snapshot, collect_snapshot
from flows.stale import claim, take_over
from flows.training_flows import open_parent_run, promote_flow, train_flow, verdict_markdown
from monitoring import feedback, monitor, shadow
from monitoring.cooldown import Cooldown
from pipelines import registry
from pipelines.settings import Settings, load_settings

MONITOR_TRIGGERS = ("drift", "decay")  # retrainings that hold a claim on the cooldown


def retrain_deployment(task: str) -> str:
    """The ``flow/deployment`` name that ``popularity schedule`` registers for retraining ``task``."""
    return f"retrain/popularity-{task}"


class StaleData(RuntimeError):
    """Retraining would learn from the very snapshot the champion was trained on."""


def _refuse_stale(snapshot_id: str, task: str, settings: Settings) -> None:
    """Fresh data or nothing: the gate's margin makes a twin of the champion all but unpromotable.
    No champion yet is fine; an unreachable registry is an error, never "no champion"."""
    try:
        champion = registry.champion_summary(task, settings)
    except LookupError:
        return
    if champion["snapshot"] == snapshot_id:
        raise StaleData(f"the source gave snapshot {snapshot_id}, the one champion v{champion['version']} was "
                        "trained on: nothing new to learn; point POPULARITY_DRIFT__RETRAIN_SOURCE at fresh data (`popularity "
                        "demo-data FOLDER` writes the demo generator's next draw there)")


def _trigger() -> str:
    """Who started this run when the caller did not say: the deployment's schedule, or a person (the UI's
    Run button, `prefect deployment run`, a call in a notebook)."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return "schedule" if context is not None and context.flow_run.auto_scheduled else "manual"


def _refused(task: str, trigger: str, promoted: dict, settings: Settings):
    """A retraining the gate refused ends Cancelled, named ``Refused``, with the gate's reason as its message:
    not the green of a promotion, not the red of a failure. A monitor's claim on the cooldown shrinks to the
    retry delay, so the next fresh data need not wait a whole cooldown."""
    from prefect.states import Cancelled

    if trigger in MONITOR_TRIGGERS:
        nxt = Cooldown.for_task(task, settings).retry_after(settings.drift.refused_retry_hours)
    else:
        nxt = "the cooldown of drift-started retraining is untouched"
    print(f"the gate refused v{promoted['version']}; the champion stays. {nxt[0].upper()}{nxt[1:]}")
    return nxt, Cancelled(name="Refused", message=f"{promoted['reason']}; {nxt}"[:2000])


@flow(name="retrain", log_prints=True)
def retrain_flow(task: str = "binary", source: str | None = None, models: list[str] | None = None,
                 quick: bool | None = None, trigger: str | None = None, reason: str = ""):
    """Collect fresh data from the source, validate, train and promote.

    Unset arguments come from the drift settings, so a drift-started run is as cheap as configured; an
    unset ``trigger`` is ``schedule`` for a run the deployment's schedule made and ``manual`` otherwise.
    The feedback rows that came back with their images join the fresh data
    (``performance.retrain_with_feedback``). The run ends Completed when the gate promoted, Cancelled
    (``Refused``, the gate's reason as the message) when it refused, and Failed on an error; either way its
    ``verdict`` artifact holds the comparison and the gate's checks. A failure leaves production as it
    was: the champion stays, the parent MLflow run is marked FAILED and a monitor's claim on the cooldown
    is given back.
    """
    settings = load_settings()
    take_over(settings)  # runs that a killed process left RUNNING are marked failed first
    d = settings.drift
    trigger = trigger or _trigger()
    source = source or d.retrain_source
    if not source:
        raise ValueError("retraining needs fresh data: set POPULARITY_DRIFT__RETRAIN_SOURCE (a source spec such "
                         "as manifest:/data/incoming/manifest.csv; `popularity demo-data` writes one) or pass source")
    quick = d.retrain_quick if quick is None else quick
    parent = open_parent_run(settings, f"retrain-{trigger}", {"trigger": trigger, "reason": reason[:500],
                                                             "task": task, "source": source})
    print(f"retraining {task} ({trigger}) from {source}; MLflow parent run {parent}")
    try:
        returned = feedback.export_manifest(settings) if settings.performance.retrain_with_feedback else None
        also = [f"manifest:{returned}"] if returned else None
        snapshot_path = collect_snapshot(source, None, None, False, also=also)
        _refuse_stale(Path(snapshot_path).name, task, settings)
        validation = check_snapshot(snapshot_path, parent)
        trained = train_flow(snapshot=snapshot_path, task=task, models=models or d.retrain_models, quick=quick,
                             parent_run_id=parent)
        promoted = promote_flow(task=task)
    except BaseException as exc:
        MlflowClient().set_terminated(parent, "FAILED")
        MlflowClient().set_tag(parent, "error", f"{type(exc).__name__}: {exc}"[:500])
        if trigger in MONITOR_TRIGGERS:
            Cooldown.for_task(task, settings).release()
        raise
    MlflowClient().log_metric(parent, "promoted", float(bool(promoted["promoted"])))
    MlflowClient().set_tag(parent, "verdict", promoted["reason"][:500])
    summary = {"mlflow_run_id": parent, "snapshot": Path(snapshot_path).name, "trigger": trigger,
               "feedback_rows": bool(also), "validation": validation, "registered": trained["registered"],
               "promotion": promoted}
    heading = f"Retraining {settings.model_name(task)} ({trigger})"
    create_markdown_artifact(key="verdict", markdown=verdict_markdown(trained, promoted, heading),
                             description="the gate's verdict and the candidates' comparison")
    if promoted["promoted"]:
        return summary
    summary["next_attempt"], state = _refused(task, trigger, promoted, settings)
    state.data = summary
    return state


def run_retraining(**parameters) -> dict:
    """Run :func:`retrain_flow` here and return its summary, promoted or refused; an error raises."""
    state = retrain_flow(**parameters, return_state=True)
    if state.is_cancelled() and state.name == "Refused":
        return {**state.result(raise_on_failure=False), "state": state.name, "state_message": state.message}
    return {**state.result(), "state": state.name}


def _start_retraining(task: str, settings: Settings, reason: str, trigger: str) -> dict:
    """Start one retraining per cooldown: on the served deployment when one is registered, else here."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    cooldown = Cooldown.for_task(task, settings)
    claimed, message = cooldown.claim(reason)
    print(message)
    if not claimed:
        return {"started": False, "message": message}
    parameters = {"task": task, "trigger": trigger, "reason": reason}
    try:
        run = run_deployment(retrain_deployment(task), parameters=parameters, timeout=0, as_subflow=False)
    except ObjectNotFound:
        return {"started": True, "mode": "in-process", "message": message, **run_retraining(**parameters)}
    except Exception:
        cooldown.release()
        raise
    return {"started": True, "mode": "deployment", "message": message, "flow_run_id": str(run.id)}


@flow(name="monitor", log_prints=True)
def monitor_flow(task: str = "binary", retrain: bool = True) -> dict:
    """Compare the latest window of served requests with the champion's reference, and its predictions
    with the outcomes that came back; drift or decay may retrain (one retraining per cooldown). A challenger
    waiting for its live outcomes is promoted or refused for good once they are in (``promotion``)."""
    settings = load_settings()
    claim()  # labelled with its process, as every flow run a killed process could leave behind
    drift, realized, report_path = monitor.run(task, settings)
    print(drift.message)
    print(realized.message)
    estimated = f"\n\n## Estimated before outcomes\n\n{realized.estimate['message']}" if realized.estimate else ""
    if realized.estimate:
        print(realized.estimate["message"])
    create_markdown_artifact(key="monitor", markdown=f"## Input drift\n\n{drift.message}\n\n## Realized performance"
                                                     f"\n\n{realized.message}{estimated}\n\nReport: `{report_path}`")
    if drift.drift:  # alerts (flows/alerts.py) notify on these
        alerts.announce(alerts.DRIFT, settings.model_name(task),
                        {"drifted_share": drift.drifted_share, "window": drift.window, "message": drift.message})
    if realized.decay:
        alerts.announce(alerts.DECAY, settings.model_name(task), realized.summary())
    rolled_back = _roll_back(task, settings, realized.shadow)
    promoted = None if rolled_back else _promote_waiting(task, settings)
    retraining = None
    if rolled_back:  # the restored champion answers now: the next check judges it, not this window
        print(f"{rolled_back['message']}; no retraining on this check")
    elif promoted and promoted["state"] == "promoted":  # likewise the challenger promoted on its live outcomes
        print(f"{promoted['message']}; no retraining on this check")
    elif retrain and (drift.drift or realized.decay):
        trigger = "drift" if drift.drift else "decay"
        reason = "; ".join(r.message for r, hit in ((drift, drift.drift), (realized, realized.decay)) if hit)
        retraining = _start_retraining(task, settings, reason, trigger)
    return {**drift.summary(), "performance": realized.summary(),
            "report": str(report_path) if report_path else None,
            "retrain_triggered": bool(retraining and retraining["started"]), "retraining": retraining,
            "rollback": rolled_back, "promotion": promoted}


def _promote_waiting(task: str, settings: Settings) -> dict | None:
    """With ``promotion.live_outcomes``: once the challenger waiting for them has its N shadowed outcomes
    (and no watched previous champion holds the shadow slot), run the promote flow on it: a challenger no
    worse becomes champion (the services follow the alias), one refused is refused for good (the verdict on
    the version, the ``challenger`` alias removed). None when there is no challenger to judge."""
    waiting = monitor.waiting_challenger(task, settings)
    if waiting is None or waiting["state"] != monitor.JUDGED:
        if waiting:
            print(waiting["message"])
        return waiting
    print(waiting["message"])
    gate = promote_flow(task=task)
    name, version = settings.model_name(task), str(gate["version"])
    block = {**waiting, "version": version, "reason": gate["reason"], "checks": gate["checks"],
             "numbers": gate["numbers"]}
    if gate["promoted"]:
        return {**block, "state": "promoted", "message": f"{name} v{version} promoted to champion in place of "
                                                         f"v{waiting['champion_version']} on its live outcomes: "
                                                         f"{gate['reason']}"}
    if version != waiting["version"] or "live_outcomes: waiting for" in gate["reason"]:
        # a retraining moved the alias meanwhile, or the outcomes went below N: judged on another check
        return {**block, "state": "waiting", "message": f"{name} v{version} not promoted yet: {gate['reason']}"}
    registry.retire_challenger(registry.client(settings), name, version, f"refused by the monitor's gate on "
                               f"{waiting['outcomes']} live outcomes: {gate['reason']}")
    return {**block, "state": "refused", "message": f"{name} v{version} refused for good on its live outcomes "
                                                    f"(the challenger alias removed): {gate['reason']}"}


def _roll_back(task: str, settings: Settings, compared: dict | None) -> dict | None:
    """The previous champion in shadow did better than the champion by more than the decay margin on the
    same outcomes: give the champion alias back to it, record the numbers on both versions and alert."""
    if not compared or compared.get("verdict") != shadow.ROLLBACK:
        return None
    name = settings.model_name(task)
    numbers = {k: compared[k] for k in ("outcomes", "champion", "challenger", "difference", "low", "high")}
    numbers["previous"] = numbers.pop("challenger")  # the shadow is the previous champion here
    reason = (f"realized {compared['metric']} of v{compared['champion_version']} {compared['champion']:.3f} below "
              f"the previous champion v{compared['version']}'s {compared['challenger']:.3f} on the same "
              f"{compared['outcomes']} live outcomes: difference {compared['difference']:+.3f} "
              f"[{compared['low']:+.3f}, {compared['high']:+.3f}], wholly above the decay margin "
              f"{settings.performance.decay_margin:g}")
    restored = registry.rollback(task, settings, reason, numbers)
    message = f"{name} rolled back from v{compared['champion_version']} to v{restored}: {reason}"
    alerts.announce(alerts.ROLLBACK, name, {"message": message, **numbers})
    return {"from": str(compared["champion_version"]), "to": str(restored), "reason": reason, "message": message,
            **numbers}

"""The monitoring job: the latest window of served requests against the champion's reference (input
drift), and the outcomes that came back against what was predicted (decay), with one report under the
home, the verdicts logged to MLflow's ``monitoring`` experiment and the latest of each kind kept in the
store the services read (:mod:`monitoring.verdicts`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from monitoring import estimation, feedback, performance, shadow
from monitoring.drift import DriftResult, check_drift
from monitoring.performance import PerformanceResult
from monitoring.report import write_report
from monitoring.request_store import SHADOW_PROFILE, open_request_store
from monitoring.verdicts import save_verdicts
from pipelines import registry, tracking
from pipelines.features.monitored import SCALARS
from pipelines.settings import Settings
from pipelines.tasks import PRIMARY

# The realized figures logged per check (``realized_<name>``), each the value or a bound of its interval.
REALIZED = ("value", "low", "high", "share", "share_low", "share_high", "brier", "brier_low", "brier_high",
            "outcomes")
# The estimate before outcomes logged per check (``estimated_<name>``): the window's, its interval, and
# on the predictions the realized figure judged, the estimate and its error against it.
ESTIMATED = ("value", "low", "high", "requests", "judged_estimate", "error")
# The shadow comparison logged per check (``shadow_<name>``): the challenger against the champion.
SHADOW = ("requests", "agreement", "outcomes", "champion", "challenger", "difference", "low", "high")


def reference_profile(champion: dict) -> pd.DataFrame:
    """The monitored features and scores of the champion's test split, stored with its training run."""
    return pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=champion["run_id"], artifact_path="reference/profile.parquet"))


def _drift(champion: dict, settings: Settings) -> tuple[DriftResult, pd.DataFrame, pd.DataFrame]:
    """The latest window of the champion's profiled requests against its reference."""
    reference = reference_profile(champion)
    d = settings.drift
    store = open_request_store(settings)
    # the projection is the champion's own: compare only the requests it answered
    since = time.time() - d.window_hours * 3600 if d.window_hours else None
    current = store.read(last=d.window, version=str(champion["version"]), since=since, profiled=True,
                         model=champion.get("name"))  # the other task's service writes the same store
    result = check_drift(reference, current, d.p_value, d.drifted_share_threshold, d.min_requests,
                         d.mmd_permutations)
    if result.enough_data and "profile_rate" in current:
        served = float((1 / current["profile_rate"].dropna()).sum())
        result.message += f" ({len(current)} profiled requests standing for about {served:.0f} served)"
    if store.skipped:
        result.message += f" ({store.skipped} torn or invalid request log lines skipped)"
    return result, reference, current


def _performance(champion: dict, task: str, settings: Settings) -> PerformanceResult:
    """The champion's predictions against the outcomes that came back as feedback."""
    observed = feedback.latest(feedback.open_feedback_store(settings).read())
    predictions = open_request_store(settings).read(model=champion.get("name")) if len(observed) else pd.DataFrame()
    return performance.evaluate(predictions, observed, champion, task, settings.performance)


def _estimate(champion: dict, reference: pd.DataFrame, realized: PerformanceResult,
              settings: Settings) -> estimation.EstimateResult:
    """The binary champion's AUC on its newest window of served predictions, estimated from its scores."""
    p = settings.performance
    served = open_request_store(settings).read(last=p.window, version=str(champion["version"]),
                                               model=champion.get("name"))
    scores = served["score"].dropna().to_numpy(float) if "score" in served else np.empty(0)
    reference_scores = reference["score"].to_numpy(float) if "score" in reference else np.empty(0)
    calibration = estimation.calibration_check(reference_scores, champion.get("metrics", {}), champion.get("label"))
    judged = realized.judged if realized.enough_data else None
    return estimation.estimate(scores, champion.get("label"), str(champion["version"]), settings.drift.min_requests,
                               p.confidence, calibration if calibration["checked"] else None, judged, realized.value)


def _shadow(champion: dict, task: str, settings: Settings) -> shadow.ShadowResult | None:
    """The version scored in shadow against the champion on the same live requests (None: none): the
    replaced champion while it is watched (its verdict may be ``rollback``), else the newest challenger."""
    served = open_request_store(settings).read(version=str(champion["version"]), model=champion.get("name"))
    if shadow.shadowed(served, str(champion["version"])).empty:
        return None
    previous = registry.watched_previous(registry.client(settings), champion["name"], str(champion["version"]))
    watched = previous is not None and not shadow.shadowed(served, str(champion["version"]), previous).empty
    observed = feedback.latest(feedback.open_feedback_store(settings).read())
    compared = shadow.compare(served, observed, champion, task, settings.performance, previous if watched else None)
    compared.drift = _shadow_drift(served, compared, champion, settings)
    return shadow.watch(compared, settings.performance.decay_margin) if watched else compared


def _shadow_drift(served: pd.DataFrame, compared: shadow.ShadowResult, champion: dict, settings: Settings) -> dict:
    """The shadow version's input-drift view: the newest window of shadowed requests that the champion profiled,
    as the shadow profiles them (its own projection of the embedding, stored by the service under
    ``shadow__``) with its own scores, against its own reference. A record without the shadow's profile
    (an older service) is judged on the champion's scalar features, which do not depend on the model."""
    rows = shadow.shadowed(served, str(champion["version"]), compared.version)
    own = [c for c in rows.columns if c.startswith(SHADOW_PROFILE)]
    profiled = rows[rows[own].notna().any(axis=1)] if own else rows.iloc[0:0]
    if len(profiled):
        current, seen = profiled[own].rename(columns=lambda c: c.removeprefix(SHADOW_PROFILE)), "its own profile"
    else:
        profiled = rows[rows["profile_rate"].notna()] if "profile_rate" in rows else rows.iloc[0:0]
        current, seen = profiled[[c for c in SCALARS if c in profiled]], "the champion's scalar features"
    current = current.assign(score=profiled["shadow_score"].to_numpy(float)).tail(settings.drift.window)
    try:
        reference = reference_profile(registry.version_summary(registry.client(settings), champion["name"],
                                                               compared.version))
    except Exception as exc:  # a version logged without its reference: the rest of the check stands
        return {"window": len(current), "enough_data": False, "drift": False, "profile": None,
                "message": f"v{compared.version} has no drift reference ({type(exc).__name__}): no drift view"}
    d = settings.drift
    result = check_drift(reference, current, d.p_value, d.drifted_share_threshold, d.min_requests, d.mmd_permutations)
    return {"window": result.window, "drifted_share": round(result.drifted_share, 4), "drift": result.drift,
            "enough_data": result.enough_data, "profile": "shadow" if seen == "its own profile" else "champion",
            "message": f"v{compared.version}'s view ({seen}, its reference): {result.message}"}


def live_evidence(task: str, settings: Settings):
    """The gate's live check (:data:`pipelines.promotion.LiveEvidence`): the challenger against the
    champion on the newest outcomes (at least the ``needed`` ones) of the requests it scored in shadow,
    judged once ``needed`` have come back."""

    def evidence(challenger: str, champion_version: str, needed: int) -> dict | None:
        c = registry.client(settings)
        champion = registry.version_summary(c, settings.model_name(task), champion_version)
        served = open_request_store(settings).read(version=champion_version, model=champion["name"])
        if shadow.shadowed(served, champion_version, challenger).empty:
            return None
        observed = feedback.latest(feedback.open_feedback_store(settings).read())
        p = settings.performance.model_copy(update={"min_outcomes": needed, "window": max(needed, settings.performance.window)})
        compared = shadow.compare(served, observed, champion, task, p, challenger)
        return compared.summary() if compared else None

    return evidence


WAITING, PENDING, JUDGED = "waiting", "pending", "judged"  # a waiting challenger's state before the gate


def waiting_challenger(task: str, settings: Settings) -> dict | None:
    """The challenger waiting for its ``promotion.live_outcomes`` (0: off, None): its shadowed outcomes
    against the champion's, ``state`` ``judged`` once N have come back with a verdict (the gate can decide
    now), ``waiting`` before, or while the watch of a ``previous`` champion holds the shadow slot, and
    ``pending`` while a person's approval of it is asked. None when there is nothing to judge: no champion,
    no challenger besides it, or one refused for good (``live_verdict``) or rolled back from champion."""
    needed = settings.promotion.live_outcomes
    if needed <= 0:
        return None
    c, name = registry.client(settings), settings.model_name(task)
    champion, challenger = (registry.alias_version(c, name, a) for a in (registry.CHAMPION, registry.CHALLENGER))
    if champion is None or challenger is None or str(challenger) == str(champion):
        return None
    champion, challenger = str(champion), str(challenger)
    tags = c.get_model_version(name, challenger).tags
    if tags.get(registry.LIVE_VERDICT) == "refused" or tags.get("gate") == "rolled_back":
        return None
    block = {"version": challenger, "champion_version": champion, "needed": needed, "outcomes": 0, "verdict": None}
    head = f"challenger v{challenger} against champion v{champion}"
    if tags.get("gate") == PENDING:
        return {**block, "state": PENDING, "message": f"{head}: a person's approval is asked; not judged again"}
    if (previous := registry.watched_previous(c, name, champion)) is not None:
        return {**block, "state": WAITING, "message": f"{head} waits: the replaced champion v{previous} is watched "
                                                      "in shadow until its watch_until; the challenger is not shadowed"}
    evidence = live_evidence(task, settings)(challenger, champion, needed) or {}
    have, verdict = int(evidence.get("outcomes") or 0), evidence.get("verdict")
    block.update(outcomes=have, verdict=verdict if have >= needed else None)
    if have >= needed and verdict in (shadow.BETTER, shadow.NO_DIFFERENCE, shadow.WORSE):
        return {**block, "state": JUDGED, "message": f"{head}: {have} of {needed} live outcomes in ({verdict}): "
                                                     "the gate judges it"}
    why = f"; no verdict on them yet ({verdict})" if have >= needed else ""
    return {**block, "state": WAITING, "message": f"{head} waits for {needed} live outcomes (have {have}){why}"}


def run(task: str, settings: Settings) -> tuple[DriftResult, PerformanceResult, Path | None]:
    """Check the latest window for input drift and the outcomes that came back for decay; report both
    under the home and in MLflow's ``monitoring`` experiment."""
    try:
        champion = registry.champion_summary(task, settings)
    except LookupError as exc:
        message = f"{exc}; no decision"
        return (DriftResult(window=0, enough_data=False, message=message),
                PerformanceResult(version=None, metric=PRIMARY[task], message=message), None)
    drift, reference, current = _drift(champion, settings)
    realized = _performance(champion, task, settings)
    estimate = _estimate(champion, reference, realized, settings) if task == "binary" else None
    if estimate is not None:
        realized.estimate = estimate.summary()
    if (compared := _shadow(champion, task, settings)) is not None:
        realized.shadow = compared.summary()
    if not drift.enough_data and not realized.enough_data and not (estimate and estimate.enough_data):
        return drift, realized, None
    out = settings.monitoring_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report = write_report(drift, reference, current, out, realized, settings.performance.decay_margin)
    save_verdicts(champion["name"], settings, drift, realized, estimate, compared)
    with mlflow.start_run(experiment_id=tracking.experiment(settings, "monitoring"), run_name="monitor-check"):
        mlflow.set_tags({"model": champion["name"], "version": champion["version"]})
        if drift.enough_data:
            per_feature = {f"{row.feature}_{name}": float(getattr(row, name))
                           for row in drift.features.itertuples() for name in ("statistic", "p_value")}
            mlflow.log_metrics({"drifted_share": drift.drifted_share, "drift": float(drift.drift),
                                "window": drift.window, **per_feature})
        if realized.enough_data:
            mlflow.log_metrics({f"realized_{k}": float(getattr(realized, k)) for k in REALIZED
                                if np.isfinite(getattr(realized, k))} | {"decay": float(realized.decay)})
        if estimate is not None and estimate.enough_data:
            mlflow.log_metrics({f"estimated_{k}": float(getattr(estimate, k)) for k in ESTIMATED
                                if np.isfinite(getattr(estimate, k))})
            mlflow.set_tag("estimate_calibrated", str(estimate.calibrated))
        if compared is not None:
            mlflow.log_metrics({f"shadow_{k}": float(getattr(compared, k)) for k in SHADOW
                                if np.isfinite(getattr(compared, k))})
            mlflow.set_tags({"shadow_version": compared.version, "shadow_verdict": compared.verdict})
            if compared.drift and compared.drift["enough_data"]:
                mlflow.log_metric("shadow_drifted_share", compared.drift["drifted_share"])
        mlflow.log_artifacts(str(out), "report")
    return drift, realized, report

"""The monitoring job: the latest window of served requests against the champion's reference, with the
report written under the home and the verdict logged to MLflow's ``monitoring`` experiment."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd

from monitoring.drift import DriftResult, check_drift
from monitoring.report import write_report
from monitoring.request_store import open_request_store
from pipelines import registry, tracking
from pipelines.settings import Settings


def reference_profile(champion: dict) -> pd.DataFrame:
    """The monitored features and scores of the champion's test split, stored with its training run."""
    return pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=champion["run_id"], artifact_path="reference/profile.parquet"))


def run(task: str, settings: Settings) -> tuple[DriftResult, Path | None]:
    """Check the latest window against the champion's reference; report under the home and in MLflow."""
    try:
        champion = registry.champion_summary(task, settings)
    except LookupError as exc:
        return DriftResult(window=0, enough_data=False, message=f"{exc}; no decision"), None
    reference = reference_profile(champion)
    d = settings.drift
    store = open_request_store(settings)
    # the projection is the champion's own: compare only the requests it answered
    since = time.time() - d.window_hours * 3600 if d.window_hours else None
    current = store.read(last=d.window, version=str(champion["version"]), since=since, profiled=True)
    result = check_drift(reference, current, d.p_value, d.drifted_share_threshold, d.min_requests,
                         d.mmd_permutations)
    if result.enough_data and "profile_rate" in current:
        served = float((1 / current["profile_rate"].dropna()).sum())
        result.message += f" ({len(current)} profiled requests standing for about {served:.0f} served)"
    if store.skipped:
        result.message += f" ({store.skipped} torn or invalid request log lines skipped)"
    if not result.enough_data:
        return result, None
    out = settings.monitoring_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report = write_report(result, reference, current, out)
    (settings.monitoring_dir / "latest.json").write_text(json.dumps(result.summary(), indent=2))
    with mlflow.start_run(experiment_id=tracking.experiment(settings, "monitoring"), run_name="drift-check"):
        mlflow.set_tags({"model": champion["name"], "version": champion["version"]})
        per_feature = {f"{row.feature}_{name}": float(getattr(row, name))
                       for row in result.features.itertuples() for name in ("statistic", "p_value")}
        mlflow.log_metrics({"drifted_share": result.drifted_share, "drift": float(result.drift),
                            "window": result.window, **per_feature})
        mlflow.log_artifacts(str(out), "report")
    return result, report

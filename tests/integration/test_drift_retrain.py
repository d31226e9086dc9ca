"""Drift against a real champion: no drift leaves everything alone; planted drift starts one retraining."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench.champion import train_champion
from monitoring.request_log import RequestLog
from monitoring.verdicts import open_verdict_store
from pipelines.settings import Settings

pytestmark = pytest.mark.integration

WINDOW = 200


@pytest.fixture(scope="module")
def home(tmp_path_factory, prefect_api):
    """A home with a quick champion, whose drift-started retraining is quick too.

    The stability gates are relaxed: 120 tiny demo images make a champion that flips too easily for them.
    The retraining's margin cannot be met (1.0 of ROC AUC), so the gate refuses what the retraining made.
    """
    home = tmp_path_factory.mktemp("drift") / "home"
    env = train_champion(home, "demo:120", {
        "PREFECT_API_URL": prefect_api, "POPULARITY_DRIFT__RETRAIN_MODELS": '["stats-gb"]',
        "POPULARITY_DRIFT__RETRAIN_SOURCE": "demo:150",  # fresh data: not the champion's demo:120
        "POPULARITY_DRIFT__RETRAIN_QUICK": "true", "POPULARITY_DRIFT__WINDOW": str(WINDOW),
        "POPULARITY_PROMOTION__FLIP_TOLERANCE": "1", "POPULARITY_PROMOTION__JPEG_TOLERANCE": "1"}, timeout_s=600)
    return home, {**env, "POPULARITY_PROMOTION__MARGIN": "1"}


def _client(home) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _champion(home):
    return _client(home).get_model_version_by_alias("popularity-binary", "champion")


def _reference(home) -> pd.DataFrame:
    return pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=_champion(home).tags["run_id"], artifact_path="reference/profile.parquet",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}"))


def _serve_window(home, reference: pd.DataFrame, seed: int, darken: float = 1.0) -> None:
    """Log a window of profiled requests like the service does: resampled reference rows, optionally darkened."""
    rows = reference.sample(WINDOW, replace=True, random_state=seed)
    for column in ("brightness", "contrast", "colourfulness", "dominant_r", "dominant_g", "dominant_b"):
        rows[column] *= darken
    log = RequestLog(home / "monitoring" / "requests", 10 * 1024 * 1024, 5)
    version = _champion(home).version
    records = rows.drop(columns="image_id", errors="ignore").to_dict(orient="records")
    log.append([{"ts": time.time(), "version": version, "label": int(r["score"] > 0.5), "profile_rate": 1.0, **r}
                for r in records])


def _monitor(env) -> dict:
    done = subprocess.run([sys.executable, "-m", "cli", "monitor", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _retrain_runs(home) -> list:
    experiment = _client(home).get_experiment_by_name("popularity")
    return _client(home).search_runs([experiment.experiment_id], "tags.trigger = 'drift'")


def test_no_drift_leaves_everything_alone(home):
    path, env = home
    _serve_window(path, _reference(path), seed=1)
    summary = _monitor(env)
    assert summary["window"] == WINDOW and not summary["drift"] and not summary["retrain_triggered"]
    assert summary["retraining"] is None
    assert open_verdict_store(Settings(home=path)).latest("popularity-binary")["drift"]["drift"] is False
    assert not _retrain_runs(path)
    monitoring = _client(path).get_experiment_by_name("monitoring")
    (check,) = _client(path).search_runs([monitoring.experiment_id])
    assert check.data.metrics["drift"] == 0 and check.data.metrics["embedding_p_value"] > 0.01
    assert {"brightness_statistic", "face_count_p_value", "score_p_value"} <= set(check.data.metrics)


def _retrain_flow_run(prefect_api: str):
    """The newest retrain flow run and its artifacts (as dicts: the client's read_artifacts sends nulls that
    prefect 3.8.8's server refuses)."""
    import httpx
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])),
                                       sort=FlowRunSort.START_TIME_DESC, limit=1)
    artifacts = httpx.post(f"{prefect_api}/artifacts/filter", json={
        "artifacts": {"flow_run_id": {"any_": [str(run.id)]}}, "limit": 20, "offset": 0, "sort": "CREATED_DESC"})
    artifacts.raise_for_status()
    return run, artifacts.json()


def test_planted_drift_starts_exactly_one_retraining_and_a_refusal_says_so(home, prefect_api):
    path, env = home
    _serve_window(path, _reference(path), seed=2, darken=0.3)
    first = _monitor(env)
    assert first["drift"] and first["retrain_triggered"], first
    assert "brightness" in first["message"] and "dominant_r" in first["message"]  # the darkened features
    assert first["retraining"]["mode"] == "in-process"
    runs = _retrain_runs(path)
    assert len(runs) == 1 and runs[0].data.tags["reason"].startswith("drift")
    assert runs[0].info.run_name.startswith("retrain-drift-20")  # named by trigger and the minute it started
    versions = _client(path).search_model_versions("name = 'popularity-binary'")
    assert len(versions) == 2  # the retrained challenger joined the registry

    # The gate refused it: the champion stays, the flow run is not the green of a promotion but Cancelled,
    # named Refused, with the gate's reason, and its verdict artifact holds the checks and the comparison.
    retraining = first["retraining"]
    assert retraining["promotion"]["promoted"] is False and retraining["state"] == "Refused"
    assert str(_champion(path).version) == "1"
    run, artifacts = _retrain_flow_run(prefect_api)
    assert run.state.is_cancelled() and run.state.name == "Refused", run.state
    assert "beats_champion" in run.state.message and "next retraining may start after" in run.state.message
    (verdict,) = [a for a in artifacts if a["key"] == "verdict"]
    assert "Not promoted" in verdict["data"] and "beats_champion" in verdict["data"] and "stats-gb" in verdict["data"]
    assert runs[0].data.metrics["promoted"] == 0 and "val_roc_auc" in runs[0].data.metrics

    # the same episode: the refusal holds the claim for the retry delay (1 h), not the 24 h cooldown
    _serve_window(path, _reference(path), seed=3, darken=0.3)
    second = _monitor(env)
    assert second["drift"] and not second["retrain_triggered"]
    assert "cooldown until" in second["retraining"]["message"]
    until = datetime.fromisoformat(second["retraining"]["message"].rsplit("cooldown until ", 1)[1].strip())
    assert timedelta(minutes=50) < until - datetime.now(UTC) <= timedelta(hours=1)
    assert len(_retrain_runs(path)) == 1

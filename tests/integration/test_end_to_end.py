"""The whole pipeline on a small demo set, asserted from the real stores it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from flows.processes import ServiceProcess
from monitoring.request_log import RequestLog
from tests.conftest import encode

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--source", "demo:200", "--quick", "--port", "0", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return home, env, summary


def test_summary_has_the_documented_keys(demo_run):
    _, _, summary = demo_run
    assert set(summary["collect"]) >= {"snapshot", "path", "items", "rejects", "labels"}
    assert summary["collect"]["items"] == 200
    assert set(summary["champion"]) >= {"name", "version", "alias", "family", "metrics", "baseline"}
    assert summary["champion"]["alias"] == "champion"
    assert set(summary["monitor"]) >= {"window", "drifted_share", "drift", "retrain_triggered"}


def test_mlflow_holds_runs_with_metrics_and_artifacts(demo_run):
    home, _, summary = demo_run
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("popularity")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == summary["mlflow_run_id"]]
    families = {r.data.tags["family"] for r in children}
    assert {"classical", "cnn"} <= families
    for run in children:
        assert "test_roc_auc" in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/evaluation.png" in artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(summary["mlflow_run_id"])}
    assert {"comparison.md", "summary.json"} <= parent_artifacts


def test_champion_alias_carries_the_gate_reason(demo_run):
    home, _, summary = demo_run
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    version = client.get_model_version_by_alias("popularity-binary", "champion")
    assert version.tags["gate"] == "passed"
    assert "promoted to champion" in version.description
    assert summary["champion"]["metrics"]["roc_auc"] > summary["champion"]["baseline"]["roc_auc"]


def test_the_run_probed_the_service_and_checked_drift(demo_run):
    home, _, summary = demo_run
    assert summary["service"]["ok"] == summary["service"]["sent"] > 0
    assert summary["service"]["non_image_status"] == 400
    assert summary["monitor"]["report"] and Path(summary["monitor"]["report"]).exists()
    logged = RequestLog(home / "monitoring" / "requests", 10**7, 5).read()
    assert len(logged) >= summary["service"]["ok"]
    # every monitored feature of the reference, the champion's PCA projection included, and no pixels
    profile = mlflow.artifacts.download_artifacts(run_id=summary["champion"]["run_id"],
                                                  artifact_path="reference/profile.parquet",
                                                  tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    reference = set(pd.read_parquet(profile).columns) - {"image_id"}
    assert {"dominant_r", "dominant_share", "face_count", "pc1", "score"} <= reference <= set(logged.columns)
    assert logged[sorted(reference)].notna().all().all()
    assert set(logged.columns) - reference <= {"ts", "version", "label"}


def test_service_scores_a_photograph_and_refuses_a_non_image(demo_run, photographs):
    home, env, _ = demo_run
    with ServiceProcess(port=0, log_path=home / "service-test.log", env=env) as service:
        ok = httpx.post(f"{service.url}/predict", files={"image": ("cat.jpg", encode(photographs["chelsea"]))},
                        timeout=60)
        assert ok.status_code == 200
        assert 0.0 <= ok.json()["score"] <= 1.0
        bad = httpx.post(f"{service.url}/predict", files={"image": ("notes.jpg", b"plain text")}, timeout=60)
        assert 400 <= bad.status_code < 500
        assert "not_an_image" in bad.text

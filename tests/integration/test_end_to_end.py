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

from ops.processes import ServiceProcess
from monitoring.request_log import RequestLog
from tests.conftest import encode

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "home"
    # a quick model of 200 images moves more under JPEG re-compression and flips than the production
    # tolerances allow; the looser tolerances are recorded on the version (asserted below)
    env = {**os.environ, "POPULARITY_HOME": str(home), "POPULARITY_PROMOTION__JPEG_TOLERANCE": "1.0",
           "POPULARITY_PROMOTION__FLIP_TOLERANCE": "1.0"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "run", "--source", "demo:200", "--quick", "--port", "0", "--json"],
        env=env, capture_output=True, text=True, timeout=1200,  # a loaded 2-core machine
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return home, env, summary


def test_summary_has_the_documented_keys(demo_run):
    _, _, summary = demo_run
    assert set(summary["collect"]) >= {"snapshot", "path", "items", "rejects", "labels"}
    collected = summary["collect"]
    assert collected["items"] + collected["rejects"] == 200 and collected["items"] >= 150
    assert set(collected["reject_reasons"]) <= {"outlier"}  # seed 003's MAD filter on users
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
        assert {"val_roc_auc", "test_roc_auc"} <= set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/evaluation.png" in artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(summary["mlflow_run_id"])}
    assert {"comparison.md", "summary.json"} <= parent_artifacts
    # the parent run, named by what ran and when, carries the chosen candidate's metrics as columns
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.run_name.startswith("pipeline-binary-20")
    (chosen,) = [r for r in children if r.data.tags["candidate"] == parent.data.tags["chosen"]]
    for metric in ("val_roc_auc", "test_roc_auc"):
        assert parent.data.metrics[metric] == pytest.approx(chosen.data.metrics[metric])


def test_champion_alias_carries_the_gate_reason(demo_run):
    home, _, summary = demo_run
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    version = client.get_model_version_by_alias("popularity-binary", "champion")
    assert version.tags["gate"] == "passed"
    assert "promoted to champion" in version.description
    assert summary["champion"]["metrics"]["roc_auc"] > summary["champion"]["baseline"]["roc_auc"]
    # chosen on validation: the best validation score among the candidates, whatever their test scores
    candidates = [row for row in summary["comparison"] if row["family"] not in ("baseline", "oracle")]
    accepted = [row for row in candidates if not row["selection"].startswith("skipped")]  # what the gate would take
    chosen = max(accepted, key=lambda row: row["val_roc_auc"])
    assert summary["champion"]["selection"] == {"split": "validation", "metric": "roc_auc",
                                                "value": pytest.approx(chosen["val_roc_auc"])}
    assert summary["champion"]["candidate"] == chosen["candidate"]
    assert json.loads(version.tags["gate_thresholds"])["floor"] == 0.6  # the production floor, on record
    assert json.loads(version.tags["gate_loosened"]) == {"jpeg_tolerance": 1.0, "flip_tolerance": 1.0}


def test_the_run_probed_the_service_and_checked_drift(demo_run):
    home, _, summary = demo_run
    assert summary["service"]["ok"] == summary["service"]["sent"] > 0
    assert summary["service"]["non_image_status"] == 400
    assert summary["monitor"]["report"] and Path(summary["monitor"]["report"]).exists()
    # held-out images from the same generator: no drift; the same images darkened: drift, no retraining
    assert summary["monitor"]["window"] == summary["service"]["ok"] and not summary["monitor"]["drift"]
    shifted = summary["shifted"]
    assert shifted["service"]["ok"] == shifted["service"]["sent"] == summary["service"]["sent"]
    assert shifted["monitor"]["drift"] and "brightness" in shifted["monitor"]["message"]
    assert not shifted["monitor"]["retrain_triggered"]
    logged = RequestLog(home / "monitoring" / "requests", 10**7, 5).read()
    assert len(logged) >= summary["service"]["ok"] + shifted["service"]["ok"]
    # every monitored feature of the reference, the champion's PCA projection included, and no pixels
    profile = mlflow.artifacts.download_artifacts(run_id=summary["champion"]["run_id"],
                                                  artifact_path="reference/profile.parquet",
                                                  tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    reference = set(pd.read_parquet(profile).columns) - {"image_id"}
    assert {"dominant_r", "dominant_share", "face_count", "pc1", "score"} <= reference <= set(logged.columns)
    assert logged[sorted(reference)].notna().all().all()
    assert set(logged.columns) - reference <= {"ts", "model", "version", "label", "profile_rate", "prediction_id"}
    assert (logged["model"] == "popularity-binary").all()  # each task's monitor reads its own model's records
    assert logged["prediction_id"].notna().all() and logged["prediction_id"].is_unique
    assert (logged["profile_rate"] == 1).all()  # one probe request at a time: every one is profiled


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

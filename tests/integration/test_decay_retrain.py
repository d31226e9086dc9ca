"""Outcomes against a real champion: the audience's taste changes (the same photos and users, a new
outcome rule), input drift stays quiet, realized ROC AUC falls, one retraining starts on data that
includes the feedback rows, and the new champion's realized ROC AUC recovers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from bench.champion import train_champion
from monitoring.request_log import RequestLog
from pipelines import registry
from pipelines.data.images import decode
from pipelines.data.snapshots import Snapshot
from pipelines.data.sources import parse_spec
from pipelines.settings import Settings

pytestmark = pytest.mark.integration

WINDOW = 200
MODEL = "popularity-binary"


@pytest.fixture(scope="module")
def home(tmp_path_factory, prefect_api):
    """A home with a quick champion; retraining reads fresh data drawn under the new rule.

    The champion learns from 300 demo photos, so its test ROC AUC is rough: the decay margin is widened
    to 0.2 (the planted change turns the realized AUC upside down) and the stability gates relaxed.
    """
    home = tmp_path_factory.mktemp("decay") / "home"
    env = train_champion(home, "demo:300", {
        "PREFECT_API_URL": prefect_api, "POPULARITY_DRIFT__RETRAIN_MODELS": '["stats-gb"]',
        "POPULARITY_DRIFT__RETRAIN_SOURCE": "demo:300?seed=31&rule=shifted",
        "POPULARITY_DRIFT__RETRAIN_QUICK": "true", "POPULARITY_DRIFT__WINDOW": str(WINDOW),
        "POPULARITY_PERFORMANCE__DECAY_MARGIN": "0.2",
        "POPULARITY_PROMOTION__FLIP_TOLERANCE": "1", "POPULARITY_PROMOTION__JPEG_TOLERANCE": "1"})
    return home, env


def _uri(home) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _champion_version(home) -> str:
    return str(MlflowClient(_uri(home)).get_model_version_by_alias(MODEL, "champion").version)


def _serve(home, seed: int) -> None:
    """Score a window of fresh demo photos with the champion and record each answer as the service does
    (its prediction id, the caller's post id, the drift profile of every image)."""
    settings = Settings(home=home)
    items = list(parse_spec(f"demo:{WINDOW}?seed={seed}", settings).items())
    limits = settings.images
    images = [decode(item.data, limits.max_bytes, limits.max_pixels, limits.min_side, max_side=limits.model_side)[0]
              for item in items]
    previous = mlflow.get_tracking_uri()
    try:
        model, _ = registry.load_model("binary", settings.model_copy(update={"mlflow_tracking_uri": _uri(home)}))
    finally:
        mlflow.set_tracking_uri(previous)
    scored, profiles = model.predict_images(images), model.profile_images(images)
    version = _champion_version(home)
    RequestLog(settings.monitoring_dir / "requests", settings.drift.log_max_bytes, settings.drift.log_backups).append([
        {"ts": time.time(), "version": version, "score": float(score), "label": int(label),
         "prediction_id": uuid.uuid4().hex, "post_id": item.fields["post_id"], "profile_rate": 1.0, **profile}
        for item, score, label, profile in zip(items, scored["score"], scored["label"],
                                               profiles.to_dict(orient="records"), strict=True)])


def _cli(env, *args) -> dict:
    done = subprocess.run([sys.executable, "-m", "cli", *args, "--json"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _runs(home, trigger: str) -> list:
    client = MlflowClient(_uri(home))
    experiment = client.get_experiment_by_name("popularity")
    return client.search_runs([experiment.experiment_id], f"tags.trigger = '{trigger}'")


def test_planted_decay_is_caught_by_outcomes_retrained_on_feedback_and_recovers(home):
    path, env = home
    first_champion = _champion_version(path)

    _serve(path, seed=21)
    assert _cli(env, "feedback", "--source", "demo:200?seed=21")["accepted"] == WINDOW
    usual = _cli(env, "monitor")
    assert not usual["drift"] and not usual["retrain_triggered"], usual
    assert usual["performance"]["enough_data"] and not usual["performance"]["decay"], usual["performance"]

    # the audience's taste changes: the same kind of photos, posted by the same kind of users
    _serve(path, seed=22)
    assert _cli(env, "feedback", "--source", "demo:200?seed=22&rule=shifted")["accepted"] == WINDOW
    changed = _cli(env, "monitor")
    assert not changed["drift"], changed["message"]  # the inputs look as usual
    realized = changed["performance"]
    assert realized["decay"] and realized["version"] == first_champion, realized
    assert realized["high"] < usual["performance"]["low"]
    assert changed["retrain_triggered"] and changed["retraining"]["mode"] == "in-process", changed
    (retraining,) = _runs(path, "decay")
    assert retraining.data.tags["reason"].startswith("decay: realized roc_auc")
    snapshot = Snapshot.open(Settings(home=path).datasets_dir, changed["retraining"]["snapshot"])
    feedback_images = str(Settings(home=path).feedback_dir / "images")
    learned_from_feedback = snapshot.manifest["source_ref"].str.startswith(feedback_images)
    assert learned_from_feedback.sum() >= WINDOW // 2  # the feedback rows that survived the label's filters
    assert changed["retraining"]["promotion"]["promoted"], changed["retraining"]["promotion"]
    assert _champion_version(path) != first_champion

    # the new champion has no outcomes yet: nothing to decide, and no second retraining
    waiting = _cli(env, "monitor")
    assert not waiting["performance"]["enough_data"] and not waiting["retrain_triggered"]
    assert len(_runs(path, "decay")) == 1

    _serve(path, seed=23)
    _cli(env, "feedback", "--source", "demo:200?seed=23&rule=shifted")
    recovered = _cli(env, "monitor")["performance"]
    assert recovered["version"] == _champion_version(path) and not recovered["decay"], recovered
    assert recovered["value"] > realized["high"] + 0.2
    monitoring = MlflowClient(_uri(path)).get_experiment_by_name("monitoring")
    checks = MlflowClient(_uri(path)).search_runs([monitoring.experiment_id], "metrics.decay = 1")
    assert len(checks) == 1 and pd.notna(checks[0].data.metrics["realized_high"])

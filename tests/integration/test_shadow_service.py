"""Shadow scoring on a real service: with ``POPULARITY_SERVING__SHADOW_SHARE=1`` the registry's challenger
scores every answered image after the answer, its score stored beside the champion's under the same
``prediction_id``; the champion's answers are those of the service without a shadow, and a challenger
that cannot load is reported in /readyz and /metrics and changes nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from monitoring.request_log import RequestLog
from ops.processes import ServiceProcess
from tests.conftest import encode
from tests.helpers import API_KEY

pytestmark = pytest.mark.integration
AUTH = {"X-API-Key": API_KEY}
NAME = "popularity-binary"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shadow_home(champion_home, tmp_path_factory):
    """A copy of the session's home whose champion's model is registered again, as the challenger."""
    home = tmp_path_factory.mktemp("shadow") / "home"
    shutil.copytree(champion_home, home, ignore=shutil.ignore_patterns("requests*"))
    uri, previous = f"sqlite:///{home / 'mlflow.db'}", mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # MLflow resolves a logged model's source through the global registry
    try:
        registry = MlflowClient(uri)
        champion = registry.get_model_version_by_alias(NAME, "champion")
        challenger = registry.create_model_version(NAME, champion.source, run_id=champion.run_id,
                                                   tags={**champion.tags, "candidate": "shadowed"})
        registry.set_registered_model_alias(NAME, "challenger", challenger.version)
    finally:
        mlflow.set_tracking_uri(previous)
    return home, str(challenger.version)


@pytest.fixture(scope="module")
def shadow_service(shadow_home, tmp_path_factory):
    home, _ = shadow_home
    log = tmp_path_factory.mktemp("shadow-service") / "service.log"
    env = {"POPULARITY_HOME": str(home), "POPULARITY_API_KEY": API_KEY,
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "POPULARITY_SERVING__SHADOW_SHARE": "1"}
    with ServiceProcess(port=0, log_path=log, env=env) as svc:
        yield svc


def _records(home, ids: set[str], timeout_s: float = 90) -> dict:
    log = RequestLog(home / "monitoring" / "requests", 10 * 1024 * 1024, 5)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        frame = log.read()
        if "prediction_id" in frame and ids <= set(frame["prediction_id"].dropna()):
            return frame.set_index("prediction_id").loc[sorted(ids)].to_dict(orient="index")
        time.sleep(0.5)  # written in batches once the challenger scored them, off the request path
    raise AssertionError(f"records of {ids} not stored within {timeout_s} s")


def test_the_challenger_scores_in_shadow_beside_an_unchanged_champion(service, shadow_service, shadow_home,
                                                                      photographs):
    home, shadow = shadow_home
    images = [encode(p) for p in photographs.values()]
    with httpx.Client(base_url=shadow_service.url, headers=AUTH, timeout=120) as client, \
            httpx.Client(base_url=service.url, headers=AUTH, timeout=120) as plain:
        reloaded = client.post("/reload")  # follows both aliases now, rather than at the next watch
        assert reloaded.status_code == 200, reloaded.text
        model = client.get("/model").json()
        champion = str(model["version"])
        assert model["alias"] == "champion"
        assert model["shadow"] == {"share": 1.0, "version": shadow, "alias": "challenger", "problem": None}
        assert "shadow" not in plain.get("/model").json()  # off by default: /model as before

        answers = [client.post("/predict", files={"image": ("a.jpg", b)}, data={"post_id": f"p{i}"}).json()
                   for i, b in enumerate(images)]
        batch = client.post("/predict_batch", files=[("images", (f"{i}.jpg", b)) for i, b in enumerate(images)])
        assert batch.status_code == 200, batch.text
        answers += batch.json()["results"]
        reference = [plain.post("/predict", files={"image": ("a.jpg", b)}).json() for b in images] * 2
        # the champion's answers are the service's without a shadow
        assert [(a["version"], a["label"]) for a in answers] == [(r["version"], r["label"]) for r in reference]
        assert [a["score"] for a in answers] == pytest.approx([r["score"] for r in reference])
        assert all(a["version"] == champion and "shadow_score" not in a for a in answers)

        records = _records(home, {a["prediction_id"] for a in answers})
        for a in answers:
            stored = records[a["prediction_id"]]
            assert stored["version"] == champion and stored["score"] == pytest.approx(a["score"])
            # the same registered model in shadow: the same score of the same image
            assert stored["shadow_version"] == shadow and stored["shadow_score"] == pytest.approx(a["score"])

        ready = client.get("/readyz")
        assert ready.status_code == 200 and "shadow_problem" not in ready.text
        metrics = client.get("/metrics").text
        assert f'popularity_shadow_version{{version="{shadow}"}} 1' in metrics and "popularity_shadow_problem 0.0" in metrics


def test_a_challenger_that_cannot_load_is_reported_and_changes_nothing_else(shadow_service, shadow_home, jpeg):
    home, shadow = shadow_home
    registry = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (home / "not-a-model").mkdir(exist_ok=True)
    broken = registry.create_model_version(NAME, str(home / "not-a-model"), tags={"candidate": "broken"})
    registry.set_registered_model_alias(NAME, "challenger", broken.version)
    try:
        _broken_challenger_changes_nothing(shadow_service, home, str(broken.version), jpeg)
    finally:
        registry.set_registered_model_alias(NAME, "challenger", shadow)


def _broken_challenger_changes_nothing(shadow_service, home, broken: str, jpeg: bytes) -> None:
    with httpx.Client(base_url=shadow_service.url, headers=AUTH, timeout=120) as client:
        reloaded = client.post("/reload")
        assert reloaded.status_code == 200, reloaded.text  # the champion is fine: the reload succeeded
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["ready"] is True and body["problem"] is None
        assert f"challenger v{broken}" in body["shadow_problem"]
        metrics = client.get("/metrics").text
        assert "popularity_shadow_problem 1.0" in metrics and "popularity_model_problem 0.0" in metrics
        answer = client.post("/predict", files={"image": ("a.jpg", jpeg)})
        assert answer.status_code == 200 and answer.json()["version"] == str(client.get("/model").json()["version"])
        record = _records(home, {answer.json()["prediction_id"]})[answer.json()["prediction_id"]]
        assert record["score"] == pytest.approx(answer.json()["score"])


def test_monitor_compares_the_challenger_with_the_champion_on_the_same_requests(shadow_service, shadow_home,
                                                                              photographs):
    """Six shadowed answers and their outcomes: ``monitor --json`` has a ``shadow`` block on them (the same
    model in shadow: full agreement, no difference)."""
    home, shadow = shadow_home
    images = [encode(p) for p in photographs.values()] * 2
    with httpx.Client(base_url=shadow_service.url, headers=AUTH, timeout=120) as client:
        ids = [client.post("/predict", files={"image": ("a.jpg", b)}).json()["prediction_id"] for b in images]
        _records(home, set(ids))  # shadow-scored and stored
        rows = [{"prediction_id": p, "likes": 10 * (k + 1), "followers": 100} for k, p in enumerate(ids)]
        recorded = client.post("/feedback", json={"rows": rows})
        assert recorded.status_code == 200, recorded.text
    env = {**os.environ, "POPULARITY_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
           "POPULARITY_PERFORMANCE__MIN_OUTCOMES": "5"}
    done = subprocess.run([sys.executable, "-m", "cli", "monitor", "--no-retrain", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    block = json.loads(done.stdout.strip().splitlines()[-1])["shadow"]
    assert block["version"] == shadow and block["requests"] >= 6 and block["outcomes"] == 6
    assert block["agreement"] == pytest.approx(1.0) and block["champion"] == pytest.approx(block["challenger"])
    assert block["difference"] == 0 and block["low"] == block["high"] == 0 and block["verdict"] == "no difference"


@pytest.fixture(scope="module")
def jpeg(photographs) -> bytes:
    return encode(photographs["coffee"])

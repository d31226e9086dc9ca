"""The nowcast served for the score task: a ``nowcast`` champion (image + user + the first days' views)
trained and promoted on demo data, `popularity model --task score` showing it, and the service started
with ``POPULARITY_TASK=score`` answering `/predict` with and without ``daily_views``, its score following
the early views."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bench.champion import STABILITY_RELAXED, train_champion
from monitoring.request_log import RequestLog
from ops.processes import ServiceProcess
from tests.helpers import API_KEY, photo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TASK, MODEL = "score", "popularity-score"


@pytest.fixture(scope="module")
def nowcast_home(tmp_path_factory, prefect_api) -> Path:
    """A home whose score-task champion is a quick nowcast on 200 demo posts (their views_d1..d30).

    The gate's flip/JPEG stability tolerances are relaxed as for the session's champion: a test split
    of about 40 demo posts makes noisy shifts, and serving is under test here, not the gate."""
    home = tmp_path_factory.mktemp("nowcast") / "home"
    train_champion(home, "demo:200", {"PREFECT_API_URL": prefect_api, **STABILITY_RELAXED}, task=TASK,
                   models=("nowcast",))
    return home


@pytest.fixture(scope="module")
def score_service(nowcast_home, tmp_path_factory):
    log = tmp_path_factory.mktemp("nowcast-service") / "service.log"
    env = {"POPULARITY_HOME": str(nowcast_home), "POPULARITY_API_KEY": API_KEY, "POPULARITY_TASK": TASK}
    with ServiceProcess(port=0, log_path=log, env=env) as service, \
            httpx.Client(base_url=service.url, headers={"X-API-Key": API_KEY}, timeout=120) as client:
        yield client


def _predict(client: httpx.Client, daily_views: list[float] | None = None) -> dict:
    data = {"followers": "300", "account_age_days": "900", "posts_per_week": "3", "tag_count": "5"}
    if daily_views is not None:
        data["daily_views"] = json.dumps(daily_views)
    response = client.post("/predict", files={"image": ("post.jpg", photo(3, side=128), "image/jpeg")}, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_score_service_serves_the_nowcast_and_its_score_follows_the_early_views(score_service, nowcast_home):
    model = score_service.get("/model").json()
    assert (model["name"], model["alias"], model["candidate"], model["family"]) == (MODEL, "champion", "nowcast",
                                                                                   "sequence")

    without = _predict(score_service)  # a post not out yet: the image and the user alone
    slow_views, fast_views = [10, 15, 20], [2000, 3500, 5000]  # cumulative views of days 1..3
    slow, fast = _predict(score_service, slow_views), _predict(score_service, fast_views)
    for answer in (without, slow, fast):
        assert answer["model"] == MODEL and answer["version"] == str(model["version"]) == "1"
        assert isinstance(answer["score"], float) and answer["prediction_id"]
    assert fast["score"] > slow["score"] + 0.1, (slow, fast)  # more early views, a higher predicted score
    # the served score is on the score task's own scale, log(views per day + 1), not log(1 + day-30 views),
    # which could not lie below log(1 + the views of day 3)
    assert 0 < slow["score"] < math.log1p(slow_views[-1]) and fast["score"] < math.log1p(fast_views[-1])

    # its requests are recorded as the score model's: a binary service's v1 writing the same store is another
    answered = {a["prediction_id"] for a in (without, slow, fast)}
    log = RequestLog(nowcast_home / "monitoring" / "requests", 10 * 1024 * 1024, 5)
    deadline = time.monotonic() + 30
    while not answered <= set(log.read().get("prediction_id", [])) and time.monotonic() < deadline:
        time.sleep(0.2)  # the service writes its records in batches, off the request path
    assert answered <= set(log.read(version="1", model=MODEL)["prediction_id"])
    assert not answered & set(log.read(model="popularity-binary").get("prediction_id", []))

    too_many = score_service.post("/predict", files={"image": ("post.jpg", photo(3, side=128), "image/jpeg")},
                                  data={"daily_views": json.dumps(list(range(1, 9)))})
    assert too_many.status_code in (400, 422), too_many.text  # the nowcast reads at most a week


def test_model_command_shows_the_nowcast_champion_of_the_score_task(nowcast_home):
    env = {**os.environ, "POPULARITY_HOME": str(nowcast_home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "cli", "model", "--task", TASK, "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["name"], summary["alias"], summary["candidate"], summary["family"]) == (
        MODEL, "champion", "nowcast", "sequence")
    assert {"spearman", "rmse", "nowcast_spearman_d3", "nowcast_spearman_image"} <= set(summary["metrics"])
    assert "nowcast" in done.stdout and "sequence" in done.stdout  # the table a user reads, before the JSON

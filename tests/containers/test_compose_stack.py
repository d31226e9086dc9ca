"""The team stack as users run it in production: the images this repository builds (a Debian base made
here, the lock's wheels, no registry), `compose up` of deploy/compose.yaml, every service healthy, a
first champion trained by the worker deployment inside its container, and the service container
answering /predict with it, then `compose down -v`. `make test-containers` runs this tier."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from serving.readiness import STARTING
from tests.containers.compose import DOCKER, REPO, Stack, build_images, http_folder, write_source
from tests.helpers import API_KEY

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]
TASK = "binary"
BENTO_IMAGE = "popularity-service:test"
SERVICES = {"postgres", "mlflow", "prefect-server", "prefect-worker", "service", "service-score"}


@pytest.fixture(scope="module")
def stack():
    workdir = Path(tempfile.mkdtemp(prefix="popularity-containers-", dir="/var/tmp"))
    build_images(Path(tempfile.gettempdir()) / "popularity-containers-build.log")  # kept: each step's seconds
    stack = Stack(workdir, API_KEY)
    write_source(stack.incoming, seed=11)
    try:
        up = stack.compose("up", "-d", timeout_s=600, check=False)
        assert up.returncode == 0, f"compose up: {up.stderr[-2000:]}\n{stack.logs()}"
        print(f"compose up until every service is healthy: {stack.wait_healthy(SERVICES, timeout_s=600):.0f} s")
        yield stack
    finally:
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := condition():
                return value
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")


def _containers(stack: Stack) -> dict[str, dict]:
    ids = stack.compose("ps", "-q").stdout.split()
    found = json.loads(subprocess.run([DOCKER, "inspect", *ids], capture_output=True, text=True, check=True).stdout)
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}


def test_every_service_runs_from_the_projects_images_without_root(stack):
    containers = _containers(stack)
    assert set(containers) == SERVICES
    images = {name: c["Config"]["Image"] for name, c in containers.items()}
    assert images.pop("postgres") == "popularity-postgres:15"
    assert set(images.values()) == {"popularity-worker:0.1.0"}, images  # one image, one lock, every role
    for name in SERVICES:
        uid = stack.exec(name, "id", "-u")
        assert uid.returncode == 0 and uid.stdout.strip() not in {"", "0"}, (name, uid.stdout, uid.stderr)
        assert containers[name]["HostConfig"]["CapDrop"] == ["ALL"], name
        assert containers[name]["HostConfig"]["ReadonlyRootfs"], name
    # the locked versions, not whatever a registry image carries
    versions = stack.exec("mlflow", "python", "-c",
                          "import mlflow, prefect; print(mlflow.__version__, prefect.__version__)")
    lock = dict(line.split("==") for line in (Path(__file__).parents[2] / "requirements.lock").read_text().split()
                if "==" in line)
    assert versions.stdout.split() == [lock["mlflow"], lock["prefect"]], versions


def test_the_service_container_waits_for_a_first_champion(stack):
    service = stack.url("service")
    assert httpx.get(f"{service}/livez").status_code == 200
    not_ready = _wait(lambda: (r := httpx.get(f"{service}/readyz")).json().get("message") != STARTING and r, 60,
                      "the scorer's first answer")
    assert not_ready.status_code == 503 and "no champion yet" in not_ready.json()["message"], not_ready.text
    photo = next(stack.incoming.glob("*.jpg")).read_bytes()
    refused = httpx.post(f"{service}/predict", files={"image": ("p.jpg", photo)}, headers={"X-API-Key": API_KEY})
    assert refused.status_code == 503 and refused.json()["error"] == "no_champion"


def test_a_champion_trained_by_the_worker_deployment_is_served_by_the_service_container(stack):
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: f"{stack.url('prefect-server')}/api"}):
        run = run_deployment(f"retrain/popularity-{TASK}", parameters={"task": TASK, "trigger": "manual"},
                             timeout=1200, poll_interval=3)
    assert run.state.is_completed(), (run.state, stack.logs("prefect-worker", tail=120))
    assert run.work_pool_name == "popularity"
    champion = MlflowClient(stack.url("mlflow")).get_model_version_by_alias(f"popularity-{TASK}", "champion")
    assert champion.version == "1"

    service = stack.url("service")
    _wait(lambda: httpx.get(f"{service}/readyz").status_code == 200, 120, "the service container becoming ready")
    photos = sorted(stack.incoming.glob("*.jpg"))[:12]
    with httpx.Client(base_url=service, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        answers = [client.post("/predict", files={"image": (p.name, p.read_bytes())}) for p in photos]
        assert {(a.status_code, a.json().get("version")) for a in answers} == {(200, "1")}, answers[0].text
        assert all(a.json()["label"] in {0, 1} and 0 <= a.json()["score"] <= 1 for a in answers), answers[0].json()
        bad = client.post("/predict", files={"image": ("x.jpg", b"this is not an image")})
        assert 400 <= bad.status_code < 500, bad.text
        unauthorised = httpx.post(f"{service}/predict", files={"image": (photos[0].name, photos[0].read_bytes())})
        assert unauthorised.status_code in {401, 403}
        assert client.get("/livez").status_code == 200  # the bad request left it up



def _gauges(text: str) -> dict[str, float]:
    """The monitor's gauges on a /metrics page, by name (labels dropped)."""
    names = ("popularity_drift", "popularity_drifted_share", "popularity_realized_metric", "popularity_decay")
    return {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] in names}


def test_drift_in_the_service_containers_traffic_retrains_and_the_container_serves_v2_without_restart(stack):
    """Dark photos reach the service container; their outcomes come back through its /feedback; the
    monitor deployment (in the worker container) sees the drift and the realized performance, starts the
    retrain deployment on the fresh dark draw, v2 passes the gate, and the same service container answers
    with v2 and shows both verdicts on /metrics, read from the shared store."""
    from mlflow import MlflowClient
    from prefect import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.data.sources.demo import write_draw
    from pipelines.settings import Settings

    service = stack.url("service")
    _wait(lambda: httpx.get(f"{service}/readyz").status_code == 200, 120, "a champion served")  # the test before
    assert httpx.get(f"{service}/model", headers={"X-API-Key": API_KEY}).json()["version"] == "1"
    started = _containers(stack)["service"]["State"]["StartedAt"]
    before = _gauges(httpx.get(f"{service}/metrics").text)
    assert before["popularity_drift"] != before["popularity_drift"], before  # NaN: no verdict yet

    # the world turns dark: a dark draw arrives in the incoming folder (the retrain's source), and dark requests
    dark = write_draw(stack.incoming, Settings(demo={"size": 200}), draw=2, shift="dark")
    rows = list(csv.DictReader((stack.incoming / "manifest.csv").open()))
    assert dark["photos"] == len(rows) == 200
    with httpx.Client(base_url=service, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        answers = [client.post("/predict", files={"image": ("p.jpg", (stack.incoming / row["image"]).read_bytes())},
                               data={"post_id": row["post_id"]}) for row in rows]
        assert {(a.status_code, a.json().get("version")) for a in answers} == {(200, "1")}, answers[0].text
        time.sleep(3)  # the service writes its request records in batches, about every second
        outcomes = [{"post_id": row["post_id"], "likes": float(row["likes"]), "followers": float(row["followers"])}
                    for row in rows]
        recorded = client.post("/feedback", json={"rows": outcomes})
        assert recorded.status_code == 200 and recorded.json()["accepted"] == 200, recorded.text

    with temporary_settings({PREFECT_API_URL: f"{stack.url('prefect-server')}/api"}):
        monitor = run_deployment(f"monitor/popularity-{TASK}", parameters={"task": TASK}, timeout=900, poll_interval=3)
        assert monitor.state.is_completed(), (monitor.state, stack.logs("prefect-worker", tail=120))
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(limit=20, sort=FlowRunSort.START_TIME_DESC)
            retrain = next((r for r in runs if r.parameters.get("trigger") == "drift"), None)
            assert retrain is not None, [(r.name, r.parameters) for r in runs]
            retrain = _wait(lambda: (r := client.read_flow_run(retrain.id)).state.is_final() and r, 1200,
                            "the drift-started retrain finishing")
    assert retrain.state.is_completed(), (retrain.state, stack.logs("prefect-worker", tail=200))
    champion = MlflowClient(stack.url("mlflow")).get_model_version_by_alias(f"popularity-{TASK}", "champion")
    assert champion.version == "2"

    photo = (stack.incoming / rows[0]["image"]).read_bytes()
    with httpx.Client(base_url=service, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        _wait(lambda: client.post("/predict", files={"image": ("p.jpg", photo)}).json().get("version") == "2", 120,
              "the service container answering with v2")
    assert _containers(stack)["service"]["State"]["StartedAt"] == started  # no restart
    gauges = _wait(lambda: (g := _gauges(httpx.get(f"{service}/metrics").text))["popularity_drift"] == 1.0 and g,
                   60, "the drift gauge on the service's /metrics")
    assert 0 < gauges["popularity_drifted_share"] <= 1, gauges
    assert gauges["popularity_realized_metric"] == gauges["popularity_realized_metric"], gauges  # not NaN
    assert gauges["popularity_decay"] in {0.0, 1.0}, gauges


def test_the_bentos_container_built_on_the_local_base_serves_the_champion(stack, tmp_path):
    """`python -m serving.pack` packs the stack's champion into a Bento; `bentoml containerize` builds its
    image on the project's base (popularity-bento-base: Debian's Python and the lock's uv, no registry),
    installing the lock from the wheelhouse served over HTTP; the container answers /predict with the
    packed champion, with no MLflow, and refuses a bad image with a 4xx."""
    import sys

    from ops.processes import free_port

    home = tmp_path / "home"
    env = {**os.environ, "POPULARITY_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
           "MLFLOW_TRACKING_URI": stack.url("mlflow"),
           "PATH": f"/usr/bin:{os.environ['PATH']}",  # Debian's docker CLI, whose BuildKit works here
           "DOCKER_BUILDKIT": "1"}
    wheels = http_folder(REPO / "deploy" / "containers" / "wheelhouse")
    try:
        start = time.monotonic()
        packed = subprocess.run([sys.executable, "-m", "serving.pack", "--base-image", "popularity-bento-base:0.1.0",
                                 "--find-links", wheels.url], env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=600)
        assert packed.returncode == 0, packed.stderr[-3000:]
        tag = packed.stdout.strip().splitlines()[-1].split(" at ")[0]
        built = subprocess.run([sys.executable, "-m", "bentoml", "containerize", tag, "-t", BENTO_IMAGE,
                                "--opt", "network=host"], env=env, cwd=REPO, capture_output=True, text=True,
                               timeout=2400)
        print(f"bentoml containerize: {time.monotonic() - start:.0f} s")
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    finally:
        wheels.stop()
    dockerfile = subprocess.run([DOCKER, "history", "--no-trunc", BENTO_IMAGE], capture_output=True, text=True).stdout
    assert "UV_OVERRIDE" in dockerfile
    port, name = free_port(), f"popularity-bento-{uuid.uuid4().hex[:8]}"
    run = subprocess.run([DOCKER, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:3000",
                          "-e", f"POPULARITY_API_KEY={API_KEY}", "-e", "POPULARITY_HOME=/tmp/popularity",
                          "-e", "MLFLOW_TRACKING_URI=http://127.0.0.1:9",  # no MLflow: the Bento carries the model
                          "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true", BENTO_IMAGE],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{url}/readyz").status_code == 200, 300, "the Bento's container becoming ready")
        photo = next(stack.incoming.glob("*.jpg")).read_bytes()
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as client:
            answer = client.post("/predict", files={"image": ("p.jpg", photo)})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == f"popularity-{TASK}" and 0 <= answer.json()["score"] <= 1
            bad = client.post("/predict", files={"image": ("x.jpg", b"this is not an image")})
            assert 400 <= bad.status_code < 500, bad.text
        size = subprocess.run([DOCKER, "image", "inspect", "-f", "{{.Size}}", BENTO_IMAGE], capture_output=True,
                              text=True).stdout.strip()
        print(f"{BENTO_IMAGE}: {int(size) / 1e9:.2f} GB")
    finally:
        logs = subprocess.run([DOCKER, "logs", "--tail", "40", name], capture_output=True, text=True)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)

"""The team stack as users run it in production: the images this repository builds (a Debian base made
here, the lock's wheels, no registry), `compose up` of deploy/compose.yaml, every service healthy, a
first champion trained by the worker deployment inside its container, and the service container
answering /predict with it, then `compose down -v`. `make test-containers` runs this tier."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from serving.readiness import STARTING
from tests.containers.compose import DOCKER, Stack, build_images, write_source
from tests.helpers import API_KEY

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]
TASK = "binary"
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


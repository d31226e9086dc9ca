"""Deployable artifacts: the Kubernetes manifests against the Kubernetes schemas (offline), and a
Bento built from the repository with the champion packed in, its Dockerfile, and `bentoml serve`
of the Bento with no MLflow to reach."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from ops.processes import ServiceProcess
from tests.conftest import encode

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# kustomization.yaml is kustomize's input, not a Kubernetes object.
MANIFESTS = sorted(p for p in (REPO / "deploy" / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path):
    import kubernetes_validate

    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.31.0", strict=True)


def test_deployment_asks_for_a_gpu_and_probes_health():
    deployment = yaml.safe_load((REPO / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"


@pytest.fixture(scope="module")
def bento(champion_home):
    env = {**os.environ, "POPULARITY_HOME": str(champion_home)}
    done = subprocess.run([sys.executable, "-m", "serving.pack"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    tag, path = done.stdout.strip().splitlines()[-1].split(" at ")
    return tag, Path(path)


def test_bento_packs_the_champion_and_a_dockerfile(bento):
    tag, path = bento
    manifest = yaml.safe_load((path / "bento.yaml").read_text())
    scorer = next(s for s in manifest["services"] if s["name"] == "popularity-scorer")
    assert scorer["models"] and scorer["models"][0]["module"] == "bentoml.mlflow"
    envs = {e["name"]: e["value"] for e in manifest["envs"]}
    assert envs["POPULARITY_SERVING__BENTO_MODEL"] == scorer["models"][0]["tag"]
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11" in dockerfile and "requirements.txt" in dockerfile and "ENTRYPOINT" in dockerfile
    assert f"POPULARITY_SERVING__BENTO_MODEL={scorer['models'][0]['tag']}" in dockerfile
    assert (path / "src" / "serving" / "static" / "index.html").exists()
    assert {"/predict", "/predict_batch", "/compare", "/reload"} <= {r["route"] for r in manifest["schema"]["routes"]}


def test_bento_serves_without_mlflow(bento, champion_home, tmp_path, photographs):
    """The Bento's envs are set by its image (Dockerfile ENV), not by a local `bentoml serve`: set them here."""
    tag, path = bento
    envs = {e["name"]: e["value"] for e in yaml.safe_load((path / "bento.yaml").read_text())["envs"]}
    env = {**envs, "BENTOML_HOME": str(champion_home / "bentoml"), "POPULARITY_HOME": str(tmp_path / "empty"),
           "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens there
    with ServiceProcess(port=0, env=env, bento=tag, cwd=tmp_path, log_path=tmp_path / "bento.log") as service:
        r = httpx.post(f"{service.url}/predict", files={"image": ("a.jpg", encode(photographs["astronaut"]))},
                       timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "popularity-binary"

"""The hardening of deploy/k8s as `kubectl apply -k` renders it, and of the compose files: no root, no
capabilities, no privilege escalation, read-only root filesystems, resources everywhere, one project
image, MLflow and Prefect behind authentication with secrets from Secrets, NetworkPolicies that allow
only the topology's flows, and GPUs where CNNs train and serve. Parsed, nothing started: `make test`
runs this module (it carries no ``containers`` marker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def render() -> list[dict]:
    """``kubectl kustomize deploy/k8s`` for this kustomization (its resources, its image replacements)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    images = {i["name"]: f"{i.get('newName', i['name'])}:{i['newTag']}" for i in kustomization["images"]}
    docs = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]
    for doc in docs:
        for container in _containers(doc):
            name = container["image"].rsplit(":", 1)[0]
            container["image"] = images.get(name, container["image"])
    return docs


def _pod(doc: dict) -> dict | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] in POD_TEMPLATES else None


def _containers(doc: dict) -> list[dict]:
    pod = _pod(doc) or {}
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _secret(container: dict, name: str) -> tuple[str, str]:
    item = _env(container).get(name)
    assert item is not None and "value" not in item, f"{container['name']}: {name} must come from a Secret"
    ref = item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


DOCS = render()
WORKLOADS = [doc for doc in DOCS if _pod(doc) is not None]
BY_NAME = {doc["metadata"]["name"]: doc for doc in WORKLOADS}


@pytest.mark.parametrize("doc", WORKLOADS, ids=lambda d: d["metadata"]["name"])
def test_every_pod_runs_without_root_capabilities_or_escalation(doc):
    pod = _pod(doc)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security.get("runAsUser", 0) != 0
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    for container in _containers(doc):
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False and not own.get("privileged", False)
        assert own["capabilities"]["drop"] == ["ALL"] and not own["capabilities"].get("add")
        assert own["readOnlyRootFilesystem"] is True
        assert own.get("runAsUser", security["runAsUser"]) != 0
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (container["name"], kind)


def test_every_role_runs_the_one_project_image():
    images = {c["image"] for doc in WORKLOADS for c in _containers(doc)}
    assert len(images) == 1 and images.pop().endswith("/popularity-worker:0.1.0")


def test_mlflow_and_prefect_servers_ask_for_credentials_from_secrets():
    (mlflow,) = _containers(BY_NAME["mlflow"])
    assert "--app-name basic-auth" in " ".join(mlflow["command"])
    admin = (_secret(mlflow, "MLFLOW_AUTH_ADMIN_USERNAME"), _secret(mlflow, "MLFLOW_AUTH_ADMIN_PASSWORD"))
    (prefect,) = _containers(BY_NAME["prefect-server"])
    prefect_auth = _secret(prefect, "PREFECT_SERVER_API_AUTH_STRING")
    clients = [c for doc in WORKLOADS for c in _containers(doc) if "MLFLOW_TRACKING_URI" in _env(c)]
    assert len(clients) >= 3  # the worker and both services
    for client in clients:
        assert (_secret(client, "MLFLOW_TRACKING_USERNAME"), _secret(client, "MLFLOW_TRACKING_PASSWORD")) == admin
        if "PREFECT_API_URL" in _env(client):
            assert _secret(client, "PREFECT_API_AUTH_STRING") == prefect_auth, client["name"]


def _selected(policy: dict, labels: dict) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def _sources(policy: dict) -> list[dict]:
    return [peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [{}])]


def test_network_policies_deny_by_default_and_allow_only_the_topologys_flows():
    policies = [doc for doc in DOCS if doc["kind"] == "NetworkPolicy"]
    for doc in WORKLOADS:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if _selected(p, labels)]
        assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in mine), doc["metadata"]["name"]
    by_name = {p["metadata"]["name"]: p for p in policies}
    assert not by_name["popularity-worker"]["spec"].get("ingress"), "nothing connects to the worker"
    (prefect_peer,) = _sources(by_name["prefect-server"])
    assert prefect_peer == {"podSelector": {"matchLabels": {"app": "popularity-worker"}}}
    (mlflow_peer,) = _sources(by_name["mlflow"])
    (expression,) = mlflow_peer["podSelector"]["matchExpressions"]
    assert set(expression["values"]) == {"popularity-worker", "popularity", "popularity-score"}
    for name in ("mlflow", "prefect-server"):  # no peer-less rule: not open to every pod
        assert all(rule.get("from") for rule in by_name[name]["spec"]["ingress"]), name


def test_cnn_retraining_and_serving_get_a_gpu_in_kubernetes_and_compose():
    worker = BY_NAME["popularity-worker"]
    (container,) = _containers(worker)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in _pod(worker)["tolerations"])
    gpu = yaml.safe_load((REPO / "deploy" / "compose.gpu.yaml").read_text())["services"]
    for name in ("prefect-worker", "service"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia", name
    assert gpu["service"]["environment"]["POPULARITY_SERVING__GPU"] == "true"


def test_compose_services_drop_every_capability_and_escalation():
    services = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service and not service.get("privileged"), name  # the images' own non-root users
        assert "build" not in service, f"{name}: images come from deploy/containers/build.sh"

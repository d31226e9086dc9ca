"""The deploy files run what the tests run: every ``popularity …`` command in deploy/compose.yaml,
deploy/k8s/ and the project image parses against the CLI, one pool name throughout, no second way to
register deployments, required secrets, and no probe that restarts a service waiting for its first
champion. The files are parsed; nothing is started.

``deploy_commands()`` gives those commands as argv lists, for a test that runs them against a stack.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile.worker"
KUSTOMIZATION = K8S / "kustomization.yaml"
PROGRAM = "popularity"
POOL = "popularity"  # the one work pool: `popularity worker`'s default and every container's
POD_TEMPLATES = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) if path != KUSTOMIZATION
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"] if doc["kind"] in POD_TEMPLATES else None


def _containers() -> Iterator[tuple[str, dict]]:
    """(``file:object/container``, container) for every container of every manifest."""
    for path, doc in _manifests():
        pod = _pod_spec(doc) or {}
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            yield f"{path.name}:{doc['metadata']['name']}/{container['name']}", container


def _argv(command) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _invocations(argv: list[str]) -> list[list[str]]:
    """The ``popularity …`` calls in one container command: the command itself, or each step of an
    ``sh -c`` script (so a wrapped call is checked too)."""
    if not argv:
        return []
    if Path(argv[0]).name == PROGRAM:
        return [argv]
    if Path(argv[0]).name in {"sh", "bash"} and "-c" in argv[1:-1]:
        steps = (shlex.split(step) for step in re.split(r"&&|\|\||;|\n", argv[argv.index("-c") + 1]))
        steps = (step[1:] if step[:1] == ["exec"] else step for step in steps)
        return [step for step in steps if step and Path(step[0]).name == PROGRAM]
    return []


def _dockerfile_cmd() -> list[str]:
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(lines[-1].removeprefix("CMD ")) if lines else []  # exec form: no shell in between


def _labelled_commands() -> list[tuple[str, list[str]]]:
    found = [(f"compose.yaml:{name}", argv) for name, service in _compose()["services"].items()
             for argv in _invocations(_argv(service.get("command")))]
    found += [(label, argv) for label, container in _containers()
              for argv in _invocations(_argv(container.get("command")) + _argv(container.get("args")))]
    found += [("Dockerfile.worker:CMD", argv) for argv in _invocations(_dockerfile_cmd())]
    return found


def deploy_commands() -> list[list[str]]:
    """Every distinct ``popularity …`` command that compose, the Kubernetes manifests and the project
    image's CMD run, as argv lists in file order (``argv[1]`` is the subcommand)."""
    unique: list[list[str]] = []
    for _, argv in _labelled_commands():
        if argv not in unique:
            unique.append(argv)
    return unique


def _subcommand(argv: list[str]) -> str:
    return next((part for part in argv[1:] if not part.startswith("-")), "")


def _option(argv: list[str], name: str) -> str | None:
    for i, part in enumerate(argv):
        if part == name and i + 1 < len(argv):
            return argv[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def _subcommands(entry: dict) -> set[str]:
    """The ``popularity`` subcommands a container or a compose service runs."""
    argv = _argv(entry.get("command")) + _argv(entry.get("args"))
    return {_subcommand(call) for call in _invocations(argv)}


def _runs(label_prefix: str, subcommand: str) -> list[tuple[str, list[str]]]:
    return [(label, argv) for label, argv in _labelled_commands()
            if label.startswith(label_prefix) and _subcommand(argv) == subcommand]


@pytest.fixture(scope="module")
def cli():
    """The app as a command (typer vendors click, so its classes are not the ``click`` package's)."""
    import typer

    from cli.main import app

    return typer.main.get_command(app)


@pytest.mark.parametrize(("label", "argv"), _labelled_commands(), ids=[label for label, _ in _labelled_commands()])
def test_every_deploy_command_is_a_cli_command(cli, label, argv):
    import typer

    command, path, rest = cli, [PROGRAM], argv[1:]
    while hasattr(command, "commands"):  # a group: the app, and `stack` inside it
        assert rest and not rest[0].startswith("-"), f"{label}: {' '.join(path)} needs a subcommand: {argv}"
        name, rest = rest[0], rest[1:]
        assert name in command.commands, (f"{label}: `{' '.join(path)} {name}` is no command "
                                          f"(have: {sorted(command.commands)})")
        command, path = command.commands[name], [*path, name]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [part.split("=", 1)[0] for part in rest
               if part.startswith("--") and part.split("=", 1)[0] not in known]
    assert not unknown, f"{label}: `{' '.join(path)}` has no option {unknown} (has: {sorted(known)})"
    try:  # the values parse as well: types, counts, required options
        command.make_context(" ".join(path), list(rest))
    except typer.TyperException as exc:  # click's usage errors derive from it
        pytest.fail(f"{label}: `{shlex.join(argv)}` does not parse: {getattr(exc, 'format_message', exc.__str__)()}")


def test_compose_and_manifests_run_the_worker_and_the_service_through_the_command():
    for subcommand in ("worker", "serve"):
        places = {label.split(":")[0] for label, _ in _runs("", subcommand)}
        assert "compose.yaml" in places, f"compose runs no `popularity {subcommand}`"
        assert places - {"compose.yaml", "Dockerfile.worker"}, f"deploy/k8s runs no `popularity {subcommand}`"


def test_worker_commands_in_compose_and_manifests_share_one_pool():
    workers = _runs("", "worker")
    assert {label.split(":")[0] for label, _ in workers} >= {"compose.yaml", "worker.yaml", "Dockerfile.worker"}
    pools = {label: _option(argv, "--pool") for label, argv in workers}
    assert None not in pools.values(), f"name the pool explicitly: {pools}"
    assert set(pools.values()) == {POOL}, pools
    from pipelines.settings import StackSettings

    assert StackSettings().pool == POOL, "`popularity worker` and `popularity stack up` default to another pool"
    assert all("--healthcheck" in argv for _, argv in workers), "the probes ask the worker's /health"


def _tasks(argv: list[str]) -> list[str]:
    """The tasks a ``popularity worker`` call registers, as the command reads its ``--task`` options."""
    from cli.options import check_tasks

    given = [argv[i + 1] for i, part in enumerate(argv[:-1]) if part == "--task"]
    given += [part.split("=", 1)[1] for part in argv if part.startswith("--task=")]
    return check_tasks(given)


def test_every_worker_registers_the_deployments_of_every_task():
    from pipelines.tasks import TASKS

    workers = _runs("", "worker")
    assert workers
    for label, argv in workers:
        assert sorted(_tasks(argv)) == sorted(TASKS), f"{label}: {shlex.join(argv)} leaves a task unscheduled"
        assert "--task" in argv, f"{label}: name the tasks the worker registers"


def _served_tasks_compose() -> dict[str, str]:
    return {name: str(service.get("environment", {}).get("POPULARITY_TASK", "binary"))
            for name, service in _compose()["services"].items() if "serve" in _subcommands(service)}


def test_compose_and_manifests_serve_every_task_beside_each_other():
    """One service per task: the same command, the task from POPULARITY_TASK, its own port or Service."""
    from pipelines.tasks import TASKS

    compose = _compose()["services"]
    served = _served_tasks_compose()
    assert sorted(served.values()) == sorted(TASKS), served
    ports = [port for name in served for port in compose[name]["ports"]]
    assert len({port.rsplit(":", 1)[0] for port in ports}) == len(ports), f"two services on one host port: {ports}"

    deployments = {doc["metadata"]["name"]: doc for _, doc in _manifests() if doc["kind"] == "Deployment"}
    selectors = [doc["spec"]["selector"] for _, doc in _manifests() if doc["kind"] == "Service"]
    tasks = {}
    for name, doc in deployments.items():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if "serve" in _subcommands(container):
                tasks[name] = _env(container).get("POPULARITY_TASK", {}).get("value", "binary")
                labels = doc["spec"]["template"]["metadata"]["labels"]
                matching = [sel for sel in selectors if sel.items() <= labels.items()]
                assert len(matching) == 1, f"{name}: one Service selects its pods, not {matching}"
    assert sorted(tasks.values()) == sorted(TASKS), tasks


def test_no_compose_or_manifest_registers_deployments_another_way():
    assert not (DEPLOY / "prefect.yaml").exists(), "`popularity worker` registers the deployments"
    for path in [COMPOSE, DOCKERFILE, *sorted(K8S.glob("*.yaml"))]:
        text = path.read_text()
        for phrase in ("prefect.yaml", "prefect deploy", "--prefect-file", "prefect worker start",
                       "work-pool create"):
            assert phrase not in text, f"{path.name} mentions {phrase!r}: `popularity worker` does that"


def _env(container: dict) -> dict[str, dict]:
    return {item["name"]: item for item in container.get("env", [])}


def _secret_ref(container: dict, name: str) -> dict:
    item = _env(container).get(name)
    assert item is not None, f"{container['name']} has no {name}"
    assert "value" not in item, f"{name} is a literal; it holds a secret"
    return item["valueFrom"]["secretKeyRef"]


def test_service_manifest_requires_its_api_key_and_the_store_from_secrets():
    serving = [c for _, c in _containers() if "serve" in _subcommands(c)]
    workers = [c for _, c in _containers() if "worker" in _subcommands(c)]
    assert serving and workers
    for container in serving:
        key = _secret_ref(container, "POPULARITY_API_KEY")
        assert (key["name"], key["key"]) == ("popularity", "api-key")
        assert not key.get("optional", False), "the service listens off loopback: its API key is required"
    for container in serving + workers:
        store = _secret_ref(container, "POPULARITY_STORE__URL")
        assert not store.get("optional", False), "the monitor reads every replica's requests from the store"


def test_manifest_and_compose_urls_name_services_defined_beside_them():
    services = {doc["metadata"]["name"]: {port["port"] for port in doc["spec"]["ports"]}
                for _, doc in _manifests() if doc["kind"] == "Service"}
    for label, container in _containers():
        for name in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
            if value := _env(container).get(name, {}).get("value"):
                url = urlsplit(value)
                assert url.port in services.get(url.hostname, set()), f"{label}: {name}={value} is no Service here"
    compose = _compose()["services"]
    for name, service in compose.items():
        env = service.get("environment", {})
        for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "POPULARITY_STORE__URL"):
            if key in env:
                assert urlsplit(env[key]).hostname in compose, f"compose {name}: {key}={env[key]}"


def test_compose_service_requires_an_api_key_and_shares_the_store():
    services = _compose()["services"]
    serving = [name for name, service in services.items() if "serve" in _subcommands(service)]
    assert serving
    for name in serving:
        env = services[name]["environment"]
        assert env["POPULARITY_API_KEY"].startswith("${POPULARITY_API_KEY:?"), "compose must refuse to start without it"
        assert env["POPULARITY_STORE__URL"] == services["prefect-worker"]["environment"]["POPULARITY_STORE__URL"]
        assert urlsplit(env["POPULARITY_STORE__URL"]).path == "/monitoring"
    assert re.search(r"CREATE DATABASE monitoring;", (DEPLOY / "postgres-init.sql").read_text())
    assert services["prefect-worker"]["environment"]["POPULARITY_DRIFT__RETRAIN_SOURCE"]


def test_no_restarting_probe_in_compose_or_manifests_waits_for_a_champion():
    """A fresh stack has no champion: /readyz is 503 until one is promoted, /livez is 200 at once."""
    services = _compose()["services"]
    for name, service in services.items():
        if "serve" in _subcommands(service):
            check = " ".join(_argv(service["healthcheck"]["test"]))
            assert "/livez" in check and "/readyz" not in check, f"compose {name}: {check}"
    for label, container in _containers():
        if "serve" in _subcommands(container):
            for probe in ("startupProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["path"] == "/livez", f"{label}: {probe} restarts the pod"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        if "worker" in _subcommands(container):
            probe = container["livenessProbe"]["httpGet"]
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
            assert (probe["path"], port) == ("/health", 8080), label


def test_compose_build_context_leaves_out_the_venv():
    ignored = {line.strip().strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", ".popularity"} <= ignored, ignored
    for name, service in _compose()["services"].items():
        if build := service.get("build"):
            # .dockerignore applies at the context's root: the repository's.
            assert (COMPOSE.parent / build["context"]).resolve() == REPO, name


def test_project_image_copies_every_package_the_commands_import():
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = set(re.findall(r"^COPY (\S+) \1$", DOCKERFILE.read_text(), re.MULTILINE))
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= copied, copied


def test_compose_and_manifest_images_are_pinned_and_kustomization_lists_every_manifest():
    images = [(name, service["image"]) for name, service in _compose()["services"].items()]
    images += [(label, container["image"]) for label, container in _containers()]
    for where, image in images:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{where}: pin {image}"
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p != KUSTOMIZATION)
    replaced = {entry["name"] for entry in kustomization["images"]}
    placeholders = {image.split(":")[0] for _, image in images if "/OWNER/" in image}
    assert placeholders and placeholders <= replaced, "every placeholder image is set in kustomization.yaml"


def test_compose_and_manifest_mlflow_servers_run_as_the_stacks_does():
    """The MLflow settings `popularity stack up` starts its server with (no job runner) hold in every deployment."""
    from ops.processes import MLFLOW_SERVER_ENV

    compose_env = {k: str(v) for k, v in _compose()["services"]["mlflow"]["environment"].items()}
    (container,) = [c for name, c in _containers() if name.startswith("mlflow.yaml:")]
    manifest_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert MLFLOW_SERVER_ENV.items() <= compose_env.items()
    assert MLFLOW_SERVER_ENV.items() <= manifest_env.items()


def test_workers_pass_the_alert_webhook_from_a_secret_or_the_callers_environment():
    """Alerts are registered by the worker: compose passes POPULARITY_ALERTS__WEBHOOK_URL through (empty: none),
    the manifests read it from an optional Secret, never a literal (a webhook URL may carry a token)."""
    workers = [c for _, c in _containers() if "worker" in _subcommands(c)]
    assert workers
    for container in workers:
        ref = _secret_ref(container, "POPULARITY_ALERTS__WEBHOOK_URL")
        assert (ref["name"], ref["key"]) == ("popularity-alerts", "webhook-url") and ref["optional"] is True
    env = _compose()["services"]["prefect-worker"]["environment"]
    assert env["POPULARITY_ALERTS__WEBHOOK_URL"] == "${POPULARITY_ALERTS__WEBHOOK_URL:-}"

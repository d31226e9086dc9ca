"""The whole pipeline on one machine (``popularity run``, ``make demo``): collect → validate → train →
promote → serve → probe the service → monitor."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import mlflow
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.data_flows import check_snapshot, collect_snapshot
from flows.monitoring_flows import monitor_flow
from flows.stale import take_over
from ops.processes import ServiceProcess
from flows.training_flows import open_parent_run, promote_flow, train_flow, verdict_markdown
from monitoring.request_store import open_request_store
from pipelines import registry, tracking
from pipelines.data import probes
from pipelines.data.snapshots import Snapshot
from pipelines.settings import load_settings


@task(cache_policy=NO_CACHE)
def probe_service(url: str, images: list[bytes]) -> dict:
    """Send images to the running service as a client would, then one upload that is not an image."""
    ok, errors, scores = 0, 0, []
    with httpx.Client(timeout=60) as client:
        for i, data in enumerate(images):
            response = client.post(f"{url}/predict", files={"image": (f"probe-{i}.jpg", data)})
            if response.status_code == 200:
                ok += 1
                scores.append(response.json()["score"])
            else:
                errors += 1
        bad = client.post(f"{url}/predict", files={"image": ("notes.jpg", b"this is not an image")})
    return {"url": url, "sent": len(images), "ok": ok, "errors": errors, "non_image_status": bad.status_code,
            "mean_score": sum(scores) / len(scores) if scores else None}


@task(cache_policy=NO_CACHE)
def await_logged(task_name: str, since: float, expected: int, timeout_s: float = 60) -> int:
    """The service writes its request records behind the answers: wait until the monitor can read them."""
    settings = load_settings()
    version = str(registry.champion_summary(task_name, settings)["version"])
    store = open_request_store(settings)
    deadline = time.monotonic() + timeout_s
    while (logged := len(store.read(version=version, since=since))) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return logged


def _probe_and_check(url: str, images: list[bytes], task_name: str) -> tuple[dict, dict]:
    started = time.time()
    probe = probe_service(url, images)
    await_logged(task_name, started, probe["ok"])
    return probe, monitor_flow(task=task_name, retrain=False)


@flow(name="popularity-run", log_prints=True)
def run_flow(source: str = "demo", task: str = "binary", quick: bool = False, port: int = 3000,
             requests: int = 200, runner: str = "local", models: list[str] | None = None) -> dict:
    """The whole pipeline: collect → validate → train → promote → serve → predict → monitor.

    The service is probed with held-out images (not the drift reference), then with the same images
    darkened: the monitor's two verdicts show it can say both "no drift" and "drift"."""
    settings = load_settings()
    take_over(settings)  # runs that a killed process left RUNNING are marked failed first
    parent = open_parent_run(settings, f"pipeline-{task}", {"source": source, "task": task, "quick": str(quick)})
    snapshot_path = collect_snapshot(source, None, None, False, runner)
    snap = Snapshot(Path(snapshot_path))
    with tracking.start_run(run_id=parent):
        mlflow.log_dict(snap.meta, "snapshot.json")
    validation = check_snapshot(snapshot_path, parent)
    trained = train_flow(snapshot=snap.id, task=task, models=models, quick=quick, parent_run_id=parent, runner=runner)
    promoted = promote_flow(task=task)
    try:
        champion = registry.champion_summary(task, settings)
    except LookupError as exc:
        raise LookupError(f"nothing to serve: the gate refused the challenger and there is no earlier champion "
                          f"({promoted['reason']})") from exc
    held = probes.held_out(source, snap, requests, settings)
    service_log = settings.root / "logs" / "service.log"
    with ServiceProcess(port=port, log_path=service_log) as service:
        probe, drift = _probe_and_check(service.url, held, task)
        shifted = probes.darkened(held, settings.demo.probe_brightness, settings.images)
        shifted_probe, shifted_drift = _probe_and_check(service.url, shifted, task)
    summary = {"collect": snap.summary(), "validation": validation, "comparison": trained["table"],
               "promotion": promoted, "champion": champion, "service": probe, "monitor": drift,
               "shifted": {"service": shifted_probe, "monitor": shifted_drift,
                           "brightness": settings.demo.probe_brightness},
               "mlflow_run_id": parent}
    with tracking.start_run(run_id=parent):
        mlflow.log_text(json.dumps(summary, indent=2, default=str), "summary.json")
    verdicts = (f"\n## Drift\n\nHeld-out images: {drift['message']}\n\nThe same images at "
                f"{settings.demo.probe_brightness:.0%} brightness: {shifted_drift['message']}\n")
    create_markdown_artifact(key="verdict", markdown=verdict_markdown(trained, promoted, f"Pipeline run on {source}")
                             + verdicts, description="the gate's verdict, the candidates and the drift verdicts")
    return summary

"""The whole pipeline on one machine (``popularity run``, ``make demo``): collect → validate → train →
promote → serve → probe the service → monitor."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import mlflow
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.data import check_snapshot, collect_snapshot
from flows.monitor import monitor_flow
from flows.processes import ServiceProcess
from flows.training import open_parent_run, promote_flow, train_flow
from pipelines import registry
from pipelines.data.snapshots import Snapshot
from pipelines.settings import load_settings


@task(cache_policy=NO_CACHE)
def probe_service(url: str, snapshot_path: str, requests: int) -> dict:
    """Send held-out test images to the running service, as a client would."""
    snap = Snapshot(Path(snapshot_path))
    test = snap.manifest[snap.manifest["split"] == "test"]
    rows = test.sample(min(requests, len(test)), random_state=0) if len(test) else test
    ok, errors, scores = 0, 0, []
    with httpx.Client(timeout=60) as client:
        for relative in rows["image_path"]:
            response = client.post(f"{url}/predict", files={"image": (Path(relative).name, snap.read_image(relative))})
            if response.status_code == 200:
                ok += 1
                scores.append(response.json()["score"])
            else:
                errors += 1
        bad = client.post(f"{url}/predict", files={"image": ("notes.jpg", b"this is not an image")})
    return {"url": url, "sent": len(rows), "ok": ok, "errors": errors, "non_image_status": bad.status_code,
            "mean_score": sum(scores) / len(scores) if scores else None}


@flow(name="popularity-run", log_prints=True)
def run_flow(source: str = "demo", task: str = "binary", quick: bool = False, port: int = 3000,
             requests: int = 200, runner: str = "local") -> dict:
    """The whole pipeline: collect → validate → train → promote → serve → predict → monitor."""
    settings = load_settings()
    parent = open_parent_run(settings, f"pipeline-{task}", {"source": source, "task": task, "quick": str(quick)})
    snapshot_path = collect_snapshot(source, None, None, False, runner)
    snap = Snapshot(Path(snapshot_path))
    with mlflow.start_run(run_id=parent):
        mlflow.log_dict(snap.meta, "snapshot.json")
    validation = check_snapshot(snapshot_path, parent)
    trained = train_flow(snapshot=snap.id, task=task, quick=quick, parent_run_id=parent, runner=runner)
    promoted = promote_flow(task=task)
    champion = registry.champion_summary(task, settings)
    service_log = settings.root / "logs" / "service.log"
    with ServiceProcess(port=port, log_path=service_log) as service:
        probe = probe_service(service.url, snapshot_path, requests)
    drift = monitor_flow(task=task)
    summary = {"collect": snap.summary(), "validation": validation, "comparison": trained["table"],
               "promotion": promoted, "champion": champion, "service": probe, "monitor": drift,
               "mlflow_run_id": parent}
    with mlflow.start_run(run_id=parent):
        mlflow.log_text(json.dumps(summary, indent=2, default=str), "summary.json")
    return summary

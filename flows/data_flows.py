"""The data flows: collect a source into a snapshot, and check a snapshot with Great Expectations."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.scaleout import fetch_items
from flows.stale import claim
from pipelines import tracking
from pipelines.data.collect import collect
from pipelines.data.snapshots import Snapshot
from pipelines.data.sources import Combined, parse_spec
from pipelines.data.verdicts import FailedValidation
from pipelines.settings import load_settings
from validation import validate_snapshot


@task(cache_policy=NO_CACHE)
def collect_snapshot(source: str, name: str | None, label: str | None, drop_outliers: bool,
                     runner: str = "local", allow_private: bool = False, allow_outside_paths: bool = False,
                     also: list[str] | None = None) -> str:
    """Collect ``source`` (and, after it, the ``also`` sources: feedback rows, say) into one snapshot."""
    settings = load_settings().for_collection(allow_private, allow_outside_paths)
    spec = parse_spec(source, settings)
    if also:
        spec = Combined([spec, *(parse_spec(extra, settings) for extra in also)])
        runner = "local"
    items = fetch_items(source, runner, allow_private, allow_outside_paths) if runner != "local" else None
    return str(collect(spec, settings, name=name, label=label, drop_outliers=drop_outliers, items=items).path)


@flow(name="collect", log_prints=True)
def collect_flow(source: str = "demo", name: str | None = None, label: str | None = None,
                 drop_outliers: bool = False, runner: str = "local", allow_private: bool = False,
                 allow_outside_paths: bool = False) -> dict:
    """Collect a source into an immutable snapshot; returns the snapshot summary."""
    claim()
    path = collect_snapshot(source, name, label, drop_outliers, runner, allow_private, allow_outside_paths)
    return Snapshot(Path(path)).summary()


@task(cache_policy=NO_CACHE)
def check_snapshot(snapshot_path: str, parent_run_id: str | None = None) -> dict:
    """The snapshot suites; their results and Data Docs go on the parent MLflow run when there is one."""
    report = validate_snapshot(Snapshot(Path(snapshot_path)), load_settings())
    if parent_run_id:
        with tracking.start_run(run_id=parent_run_id):
            for path in (report.results_path, report.docs_path):
                if path and Path(path).exists():
                    (mlflow.log_artifacts if Path(path).is_dir() else mlflow.log_artifact)(path, "validation")
    create_markdown_artifact(
        key="validation", description="Great Expectations results",
        markdown=f"## Validation of {Path(snapshot_path).name}\n\n{report.message}\n\n"
                 f"Data Docs: `{report.docs_path}`",
    )
    if not report.success:
        raise FailedValidation(f"validation failed: {report.message}{report.docs_hint}")
    return report.summary()


@flow(name="validate", log_prints=True)
def validate_flow(snapshot: str | None = None) -> dict:
    """Run the Great Expectations suites on a snapshot (the latest by default)."""
    claim()
    return check_snapshot(str(Snapshot.open(load_settings().datasets_dir, snapshot).path))

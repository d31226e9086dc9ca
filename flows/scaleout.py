"""Fan-out work that a Dask cluster can spread: feature batches of a snapshot, batches of items to download.

Each unit is a Prefect task mapped over the flow's task runner (see ``flows.runners``), so the same
flow runs on threads, a LocalCluster or a team's scheduler. Features are cut into the serial
path's batches and stored in its cache, so both paths give the same table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from flows.runners import task_runner
from pipelines.data.collect import batches, prepare_batch
from pipelines.data.download import transient
from pipelines.data.snapshots import Snapshot
from pipelines.data.sources import Item, Reject, parse_spec
from pipelines.features.cache import batch_features, features_cache, store_features
from pipelines.features.featurizer import ImageFeaturizer
from pipelines.settings import ImageLimits, Settings, load_settings

# Training caches one table per feature group; these are the image groups its classical candidates read.
TRAINING_GROUPS = ("colors", "quality")


@task(cache_policy=NO_CACHE)
def feature_batch(snapshot_path: str, start: int, stop: int, featurizer: ImageFeaturizer,
                  limits: dict) -> pd.DataFrame:
    snap = Snapshot(Path(snapshot_path))
    return batch_features(snap, snap.manifest.iloc[start:stop], featurizer, ImageLimits(**limits))


@flow(name="features", log_prints=True)
def features_flow(snapshot_path: str, groups: list[str] | None = None) -> dict[str, str]:
    """Compute and cache each feature group's table of a snapshot, one task per batch."""
    settings = load_settings()
    snap = Snapshot(Path(snapshot_path))
    size, step = len(snap.manifest), settings.features.batch_size
    starts = list(range(0, size, step))
    pending = {}
    for group in groups or TRAINING_GROUPS:
        feat = ImageFeaturizer.from_settings(settings.features, (group,))
        cache = features_cache(snap, feat, settings.features_dir)
        if not cache.exists():
            pending[cache] = feature_batch.map(str(snap.path), starts, [s + step for s in starts], unmapped(feat),
                                               unmapped(settings.images.model_dump()))
    for cache, futures in pending.items():
        store_features(pd.concat([f.result() for f in futures]), cache)
    print(f"features of {size} images in {len(starts)} batches: {len(pending)} tables computed")
    return {g: str(features_cache(snap, ImageFeaturizer.from_settings(settings.features, (g,)), settings.features_dir))
            for g in groups or TRAINING_GROUPS}


class TransientDownloadError(Exception):
    """Some downloads of a batch failed in a way that may pass (timeouts, 429, 5xx): worth a Prefect retry."""


@task(cache_policy=NO_CACHE)
def prepare_items(items: list[Item | Reject], settings: Settings) -> list[Item | Reject]:
    """One batch downloaded (with every check of ``pipelines.data.download``) and decoded.

    On a task runner Prefect owns the retries, so they show in its UI: each attempt fetches once, and a
    transient failure retries the whole batch with backoff (what was fetched is cached, so only the
    failures go out again); the last attempt keeps them as rejects, never failing the collection.
    """
    once = settings.with_group("download", retries=0)
    prepared = prepare_batch(items, once, progress=False)
    failed = [r for r in prepared if isinstance(r, Reject) and transient(r.reason)]
    if failed and task_run.run_count <= settings.download.retries:
        raise TransientDownloadError(f"{len(failed)} of {len(items)} downloads failed transiently, "
                                     f"e.g. {failed[0].ref}: {failed[0].message}")
    return prepared


@flow(name="prepare-items", log_prints=True)
def prepare_flow(source: str, allow_private: bool = False, allow_outside_paths: bool = False) -> list[Item | Reject]:
    """Every item of the source downloaded and decoded, a batch per task, in the source's order."""
    settings = load_settings().for_collection(allow_private, allow_outside_paths)
    items = parse_spec(source, settings).items()
    retrying = prepare_items.with_options(retries=settings.download.retries,
                                          retry_delay_seconds=exponential_backoff(settings.download.backoff_s))
    futures = retrying.map(list(batches(items, settings.download.batch_size)), unmapped(settings))
    return [item for future in futures for item in future.result()]


def fetch_items(source: str, runner: str, allow_private: bool = False,
                allow_outside_paths: bool = False) -> list[Item | Reject]:
    """The source's items prepared on ``runner`` (threads, a LocalCluster or a team's Dask scheduler)."""
    return prepare_flow.with_options(task_runner=task_runner(runner))(source, allow_private, allow_outside_paths)


def compute_features(snapshot_path: str, runner: str) -> dict[str, str]:
    return features_flow.with_options(task_runner=task_runner(runner))(snapshot_path)

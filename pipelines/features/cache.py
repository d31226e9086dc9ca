"""A snapshot's feature tables, computed in batches and cached per snapshot and featurizer."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipelines.features.featurizer import ImageFeaturizer
from pipelines.features.social import social_inputs


def features_cache(snapshot, featurizer: ImageFeaturizer, cache_dir: Path) -> Path:
    return cache_dir / snapshot.id / f"{featurizer.key}.parquet"


def batch_features(snapshot, rows: pd.DataFrame, featurizer: ImageFeaturizer, limits, network=None) -> pd.DataFrame:
    """Features of some manifest rows: the unit of work that a Dask worker can take (``network``: see
    :meth:`ImageFeaturizer.transform`)."""
    images = snapshot.decode_images(rows["image_path"], limits)
    return featurizer.transform(images, social_inputs(rows), network).set_index(
        pd.Index(rows["image_id"].to_numpy(), name="image_id"))


def store_features(features: pd.DataFrame, cache: Path) -> pd.DataFrame:
    """Written beside and renamed into place, so a reader never sees half a table."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    features.to_parquet(tmp)
    tmp.rename(cache)
    return features


def snapshot_features(
    snapshot, featurizer: ImageFeaturizer, cache_dir: Path, limits, batch_size: int = 256, network=None
) -> pd.DataFrame:
    """Features of every image of a snapshot, indexed by ``image_id``, cached per snapshot. Each batch prints
    its progress: on the console, and in the Prefect run's logs when a flow runs it (``log_prints``)."""
    cache = features_cache(snapshot, featurizer, cache_dir)
    if cache.exists():
        return pd.read_parquet(cache)
    manifest = snapshot.manifest
    frames, started, what = [], time.perf_counter(), "+".join(featurizer.groups)
    for start in range(0, len(manifest), batch_size):
        frames.append(batch_features(snapshot, manifest.iloc[start : start + batch_size], featurizer, limits, network))
        done = min(start + batch_size, len(manifest))
        print(f"features ({what}): {done}/{len(manifest)} images, {time.perf_counter() - started:.0f} s", flush=True)
    return store_features(pd.concat(frames), cache)

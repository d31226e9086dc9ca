"""Collection: a source's items → downloaded, decoded, checked, labelled, split → one immutable snapshot.

Items go through :func:`prepare_batch` a batch at a time, so memory stays bounded and a flow can
spread the batches over a task runner (threads or Dask) and hand the prepared items back to
:func:`collect` with ``items=``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice

import pandas as pd
from tqdm.auto import tqdm

from pipelines.data import labels, splits
from pipelines.data.download import DownloadCache, cache_dir, download_items
from pipelines.data.images import ImageError, decode
from pipelines.data.snapshots import Snapshot, SnapshotWriter
from pipelines.data.sources import Item, Reject, Source, SpecError
from pipelines.settings import Settings


def batches(items: Iterable[Item | Reject], size: int) -> Iterator[list[Item | Reject]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def prepare_batch(items: list[Item | Reject], settings: Settings, progress: bool = True) -> list[Item | Reject]:
    """Download the batch's URLs and decode every image: each item comes back with ``info`` set, or a reject.

    Plain picklable values in and out, so this is the unit of work a Dask worker runs.
    """
    limits = settings.images
    out: list[Item | Reject] = []
    cache = DownloadCache(cache_dir(settings))
    for item in download_items(items, settings, progress=progress):
        if isinstance(item, Item) and item.info is None:
            try:
                _, info = decode(item.read(), limits.max_bytes, limits.max_pixels)
            except ImageError as exc:
                if item.url and exc.reason == "corrupt":  # cut short (a lying Content-Length): not kept
                    cache.forget(item.url)
                item = Reject(item.ref, exc.reason, str(exc))
            else:
                item = replace(item, info=info)
        out.append(item)
    return out


def _drop_conflicting_duplicates(manifest: pd.DataFrame, writer: SnapshotWriter) -> pd.DataFrame:
    """Identical images under two labels are dropped from both (seed 000); plain repeats keep one."""
    if "label" in manifest:
        conflicting = manifest.groupby("image_id")["label"].transform("nunique") > 1
        for ref in manifest.loc[conflicting, "source_ref"]:
            writer.reject(ref, "conflicting_duplicate", "the same image appears under both labels")
        manifest = manifest[~conflicting]
    repeated = manifest.duplicated("image_id", keep="first")
    for ref in manifest.loc[repeated, "source_ref"]:
        writer.reject(ref, "duplicate", "the same image was already collected")
    return manifest[~repeated]


def collect(
    source: Source,
    settings: Settings,
    name: str | None = None,
    label: str | None = None,
    drop_outliers: bool = False,
    items: Iterable[Item | Reject] | None = None,
    progress: bool = True,
) -> Snapshot:
    """Collect every item of ``source`` into a snapshot; a bad item is a reject, never a failure.

    ``items`` replaces ``source.items()``, e.g. with batches already prepared on a cluster.
    """
    scheme = label or source.default_label
    if scheme not in labels.SCHEMES:
        raise labels.LabelError(f"unknown label scheme {scheme!r}; expected one of {sorted(labels.SCHEMES)}")
    writer = SnapshotWriter(settings.datasets_dir, name or source.kind, settings.snapshots.stale_tmp_minutes * 60)
    try:
        rows, oracle = [], []
        bar = tqdm(desc="collect", unit="img", disable=not progress)
        for batch in batches(items if items is not None else source.items(), settings.download.batch_size):
            for item in prepare_batch(batch, settings, progress=progress):
                bar.update(1)
                if isinstance(item, Reject):
                    writer.reject(item.ref, item.reason, item.message)
                    continue
                info, data = item.info, item.read()
                image_id, relative = writer.add_image(data, info.format)
                rows.append({
                    "image_id": image_id, "image_path": relative, "source": source.kind, "source_ref": item.ref,
                    "width": info.width, "height": info.height, "format": info.format, "mode": info.mode,
                    "n_bytes": len(data), **item.fields,
                })
                if item.oracle is not None:
                    oracle.append({"image_id": image_id, **item.oracle})
        bar.close()
        if not rows:
            raise SpecError(f"the source {source.describe()} gave no usable image "
                            f"({len(writer.rejects)} rejects: {_reasons(writer)})")
        manifest = pd.DataFrame(rows)
        manifest, dropped = labels.apply(scheme, manifest, drop_outliers=drop_outliers)
        for ref, reason, outlier in zip(dropped["source_ref"], dropped["drop_reason"], dropped["drop_outlier"]):
            writer.reject(ref, "outlier" if outlier else "filtered_by_label", f"{scheme}: {reason}")
        manifest = _drop_conflicting_duplicates(manifest.drop(columns=["drop_reason", "drop_outlier"], errors="ignore"),
                                                writer)
        if not len(manifest):
            raise SpecError(f"no item of {source.describe()} survived the {scheme} label ({_reasons(writer)})")
        group = manifest["group"] if "group" in manifest else pd.Series(pd.NA, index=manifest.index)
        manifest["group"] = group.astype("string").fillna(manifest["image_id"])
        manifest["split"] = splits.assign_splits(manifest["group"], settings.splits)
        if oracle:
            writer.write_extra("oracle.parquet", pd.DataFrame(oracle).drop_duplicates("image_id"))
        return writer.commit(manifest, {"source": source.describe(), "label": scheme,
                                        "drop_outliers": drop_outliers})
    except BaseException:
        writer.abort()
        raise


def _reasons(writer: SnapshotWriter) -> dict[str, int]:
    return pd.Series([r["reason"] for r in writer.rejects], dtype=str).value_counts().to_dict()

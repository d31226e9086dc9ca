"""Realized engagement, known days after a prediction, recorded against the prediction it belongs to.

A feedback row names its prediction by ``prediction_id`` or by the caller's ``post_id`` (then the
first prediction made with that post id: its owner, whom a later prediction with the same id does not
displace; a row naming both must name a prediction made with that post id), and carries the engagement
counted so far (likes, views, favorites, comments, daily views ``views_dN``) with the time it was
observed (``observed_at``, now by default), plus whatever the champion's label scheme needs besides (followers for
likes/followers). The feedback suite checks every batch; a row that fails is rejected with its
reasons, kept under ``<home>/monitoring/feedback/rejected/``, never dropped silently. Accepted rows
go to the ``feedback`` table (the shared store, or SQLite under the home). Their images, when the
caller's source had them, are kept by content hash, so that retraining can learn from them: under the
home's feedback folder, and with a shared store also in its ``feedback_images`` table, in the same
transaction as their rows, so that a retrain on another host (the worker) finds them there
(:func:`export_manifest` copies the ones its home lacks).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from monitoring.cooldown import UPSERTS, state_url
from monitoring.request_store import POST_ID_CHARS, create_tables, engine, open_request_store
from pipelines.data.labels import COUNT_COLUMN
from pipelines.data.snapshots import content_id, image_path
from pipelines.settings import Settings

log = logging.getLogger(__name__)
KEYS = ("prediction_id", "post_id", "observed_at")
KEPT_IMAGE = re.compile(r"images/[0-9a-f]{2}/([0-9a-f]{64})\.(jpg|png|webp|gif)")  # as image_path names them

metadata = sa.MetaData()
table = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(32), nullable=False, index=True),
    sa.Column("post_id", sa.String(POST_ID_CHARS)),
    sa.Column("observed_at", sa.Float, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Column("image", sa.String(255)),  # the kept image, relative to the feedback folder
    sa.Column("fields", sa.JSON, nullable=False),  # the counts and social columns of the row
)
# The kept images' bytes, with a shared store: whichever host records a row, every host can read its image.
images_table = sa.Table(
    "feedback_images", metadata,
    sa.Column("image", sa.String(255), primary_key=True),  # the relative path, named by its content hash
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
)
IMAGE_BATCH = 64  # images read from the table at a time


class FeedbackStore:
    """Every accepted observation; the latest per prediction is its outcome so far."""

    def __init__(self, url: str):
        self.engine = engine(url)
        create_tables(metadata, self.engine)

    def append(self, rows: list[dict], images: dict[str, bytes] | None = None) -> None:
        """Store ``rows``, and ``images`` (relative path → bytes) that are not there yet, in one transaction."""
        if not rows:
            return
        with self.engine.begin() as connection:
            if images:
                now = time.time()
                insert = UPSERTS[self.engine.dialect.name](images_table).on_conflict_do_nothing()
                connection.execute(insert, [{"image": k, "data": v, "recorded_at": now} for k, v in images.items()])
            connection.execute(table.insert(), rows)

    def images(self, paths: list[str]) -> dict[str, bytes]:
        """The stored bytes of the images at ``paths`` (those the table has)."""
        found = {}
        for start in range(0, len(paths), IMAGE_BATCH):
            query = sa.select(images_table.c.image, images_table.c.data).where(
                images_table.c.image.in_(paths[start:start + IMAGE_BATCH]))
            with self.engine.connect() as connection:
                found.update({row.image: bytes(row.data) for row in connection.execute(query)})
        return found

    def read(self, prediction_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Observations oldest first, each row's fields as columns; only of ``prediction_ids`` when given."""
        query = sa.select(table).order_by(table.c.observed_at, table.c.id)
        if prediction_ids is not None:
            query = query.where(table.c.prediction_id.in_(list(prediction_ids)))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        columns = [c.name for c in table.columns if c.name != "fields"]
        return pd.DataFrame([{**row["fields"], **{c: row[c] for c in columns}} for row in rows],
                            columns=None if rows else columns)


def open_feedback_store(settings: Settings) -> FeedbackStore:
    return FeedbackStore(state_url(settings))


def latest(observations: pd.DataFrame) -> pd.DataFrame:
    """The newest observation of each prediction: its outcome so far."""
    if observations.empty:
        return observations
    return observations.sort_values(["observed_at", "id"]).drop_duplicates("prediction_id", keep="last")


@dataclass
class FeedbackResult:
    accepted: int
    rejected: pd.DataFrame  # the rejected rows, each with its ``reasons``
    message: str
    docs_path: str | None = None
    rejected_path: str | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        rows = [{"index": int(i), "reasons": r.split(", ")} for i, r in self.rejected["reasons"].items()]
        return {"accepted": self.accepted, "rejected": len(self.rejected), "reasons": self.reasons,
                "rejected_rows": rows, "message": self.message, "rejected_path": self.rejected_path,
                "docs_path": self.docs_path}


def _seconds(value, now: float) -> float:
    """Seconds since the epoch from a datetime, an ISO string or a number; missing means now, and
    anything unreadable NaN (the suite rejects that row)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):  # None, NaN, NaT
        return now
    if isinstance(value, int | float | np.number):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return float("nan")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float("nan")


def _resolve(rows: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Each row's prediction (by id, else the first made with its post id) with when it was made and
    the post id it was made with; unknown: NaN. ``predictions`` are the store's
    :meth:`~monitoring.request_store.RequestStore.lookup` of the rows' ids."""
    known = predictions.dropna(subset=["prediction_id"]).drop_duplicates("prediction_id")
    made = known.set_index("prediction_id")["ts"]
    owner = known.set_index("prediction_id")["post_id"]
    first = known.dropna(subset=["post_id"]).sort_values("ts", kind="stable").drop_duplicates("post_id", keep="first")
    by_post = first.set_index("post_id")["prediction_id"]
    given = rows["prediction_id"].where(rows["prediction_id"].notna(), rows["post_id"].map(by_post))
    resolved = given.where(given.isin(made.index))
    return rows.assign(prediction_id=resolved, predicted_at=resolved.map(made).astype(float),
                       predicted_post_id=resolved.map(owner))


def _foreign_posts(rows: pd.DataFrame) -> list[int]:
    """Rows that name a known prediction and a post id it was not made with: an outcome of one post
    is never stored against another's prediction."""
    named = rows["post_id"].notna() & rows["prediction_id"].notna()
    return rows.index[named & (rows["post_id"] != rows["predicted_post_id"])].tolist()


def _keep_image(data: bytes, fmt: str, folder: Path) -> str:
    """Write the image once under its content hash (write, then rename); returns its relative path."""
    _, relative = image_path(data, fmt)
    _write_image(data, folder / relative)
    return relative


def _write_image(data: bytes, target: Path) -> None:
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)


def _plain(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready records: timestamps as ISO strings, NaN as absent."""
    return [{k: v for k, v in row.items() if v is not None}
            for row in json.loads(frame.to_json(orient="records", date_format="iso"))]


def record(rows: pd.DataFrame, settings: Settings, images: list[tuple[bytes, str] | None] | None = None,
           rejects: list[dict] | None = None, now: float | None = None, mode: str = "file") -> FeedbackResult:
    """Check a batch of feedback rows with the feedback suite and store those that pass.

    ``images`` are the rows' ``(bytes, format)`` when the caller's source had them; ``rejects`` are
    rows the source itself could not read (each ``{"ref", "reasons"}``), reported with the others.
    """
    from validation import validate_feedback

    now = time.time() if now is None else now
    rows = rows.reset_index(drop=True).copy()
    for column in KEYS:
        if column not in rows:
            rows[column] = None
    rows["post_id"] = [None if pd.isna(v) else str(v) for v in rows["post_id"].astype(object)]
    rows["observed_at"] = [_seconds(v, now) for v in rows["observed_at"].astype(object)]
    for column in [c for c in rows if COUNT_COLUMN.match(c)]:
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    predictions = open_request_store(settings).lookup(
        rows["prediction_id"].dropna().astype(str).tolist(), rows["post_id"].dropna().tolist())
    rows = _resolve(rows, predictions)
    store = open_feedback_store(settings)
    prior = store.read(rows["prediction_id"].dropna().unique())
    foreign = _foreign_posts(rows)
    rows = rows.drop(columns=["predicted_post_id"])
    report, reasons = validate_feedback(rows, prior, now, settings, mode)
    for i in foreign:
        reasons[i] = [*reasons.get(i, []), "post_id_of_prediction"]

    accepted_rows, kept = [], {}
    folder = settings.feedback_dir
    fields = rows.drop(columns=[*KEYS, "predicted_at"])
    for i, values in zip(rows.index, _plain(fields)):
        if i in reasons:
            continue
        image = images[i] if images is not None else None
        relative = _keep_image(*image, folder) if image is not None else None
        if relative is not None and settings.store.url is not None:  # a shared store: every host reads it there
            kept[relative] = image[0]
        accepted_rows.append({
            "prediction_id": rows.at[i, "prediction_id"], "post_id": rows.at[i, "post_id"],
            "observed_at": float(rows.at[i, "observed_at"]), "recorded_at": now,
            "image": relative, "fields": values})
    store.append(accepted_rows, kept)

    rejected = rows.loc[sorted(reasons)].assign(reasons=[", ".join(reasons[i]) for i in sorted(reasons)])
    counts = pd.Series([r for i in reasons for r in reasons[i]], dtype=str).value_counts().to_dict()
    for reject in rejects or []:
        counts[reject["reasons"]] = counts.get(reject["reasons"], 0) + 1
    unread = pd.DataFrame(rejects or [], columns=["ref", "reasons", "message"])
    rejected_all = pd.concat([rejected, unread.set_index(unread.index + len(rows))])
    path = None
    if len(rejected_all):
        path = folder / "rejected" / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        rejected_all.astype({c: str for c in rejected_all.columns if rejected_all[c].dtype == object}) \
            .to_parquet(path)
    message = (f"feedback: {len(accepted_rows)} of {len(rows) + len(unread)} rows accepted"
               + ("; rejected: " + ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else ""))
    return FeedbackResult(len(accepted_rows), rejected_all[["reasons"]], message, report.docs_path,
                          str(path) if path else None, counts)


def read_source(source, settings: Settings, progress: bool = True) -> tuple[pd.DataFrame, list, list[dict]]:
    """A collection source's rows as feedback: ``(rows, images, rejects)``; the images decoded and
    capped exactly as the collector does."""
    from pipelines.data.collect import batches, prepare_batch
    from pipelines.data.sources import Reject

    rows, images, rejects = [], [], []
    for batch in batches(source.items(), settings.download.batch_size):
        for item in prepare_batch(batch, settings, progress=progress):
            if isinstance(item, Reject):
                rejects.append({"ref": item.ref, "reasons": item.reason, "message": item.message})
                continue
            rows.append({"source_ref": item.ref, **item.fields})
            images.append((item.read(), item.info.format))
    return pd.DataFrame(rows), images, rejects


def _local_images(store: FeedbackStore, paths: list[str], folder: Path) -> set[str]:
    """The images at ``paths`` present under ``folder``: those recorded on this host, and those recorded
    on another, copied from the shared store's table (checked against the hash that names them)."""
    missing = [p for p in paths if not (folder / p).is_file()]
    for relative, data in store.images([p for p in missing if KEPT_IMAGE.fullmatch(p)]).items():
        if KEPT_IMAGE.fullmatch(relative)[1] == content_id(data):
            _write_image(data, folder / relative)
    return {p for p in paths if (folder / p).is_file()}


def export_manifest(settings: Settings) -> Path | None:
    """The feedback rows that came with an image as a manifest of their latest counts, for retraining
    (``manifest:`` source); None when there are none. The images come from this home's feedback folder
    or, recorded on another host, from the shared store; a row whose image is in neither is left out."""
    store = open_feedback_store(settings)
    outcomes = latest(store.read())
    if outcomes.empty or outcomes["image"].isna().all():
        return None
    rows = outcomes.dropna(subset=["image"]).drop(columns=["id", "recorded_at", "source_ref"], errors="ignore")
    present = _local_images(store, sorted(set(rows["image"])), settings.feedback_dir)
    if len(lost := rows[~rows["image"].isin(present)]):
        log.warning("feedback: %d rows left out of retraining, their images neither here nor in the store", len(lost))
        rows = rows[rows["image"].isin(present)]
    if rows.empty:
        return None
    path = settings.feedback_dir / "retrain.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in _plain(rows)))  # JSON keeps numbers numbers
    os.replace(tmp, path)
    return path

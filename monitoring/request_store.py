"""The request store: each served request's prediction id, the caller's post id, score, model name and
version and time, with the monitored features of those profiled for drift. The ids let realized engagement,
known days later, be joined back to what was predicted.

One interface, two places: the JSON Lines log under the home (one machine, the default) and a SQL
table (``POPULARITY_STORE__URL``, the stack's PostgreSQL) that every replica writes and the monitor
reads from any host. The service hands its records to a :class:`BatchWriter`, which writes them in
batches on its own thread, so a slow or unreachable store never delays an answer.
"""

from __future__ import annotations

import logging
import queue
import threading
from functools import lru_cache
from typing import Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from monitoring.request_log import LOOKUP_COLUMNS, RequestLog
from pipelines.settings import Settings

log = logging.getLogger(__name__)
COLUMNS = ("ts", "model", "version", "score", "label", "prediction_id", "post_id")
POST_ID_CHARS = 128  # the longest caller id the table holds

metadata = sa.MetaData()
served = sa.Table(
    "served_requests", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("version", sa.String(64), nullable=False),
    # the registered model (popularity-binary, popularity-score): every task's service writes this table,
    # and version numbers repeat across tasks. Null in rows from before the column.
    sa.Column("model", sa.String(128)),
    sa.Column("score", sa.Float),
    sa.Column("label", sa.Integer),
    sa.Column("prediction_id", sa.String(32)),
    sa.Column("post_id", sa.String(POST_ID_CHARS), index=True),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Index("ix_served_requests_version_id", "version", "id"),
    sa.Index("ux_served_requests_prediction_id", "prediction_id", unique=True),
)


class RequestStore(Protocol):
    skipped: int  # records of the last read that could not be read back

    def append(self, records: list[dict]) -> None: ...

    def read(self, last: int | None = None, version: str | None = None, since: float | None = None,
             profiled: bool = False, model: str | None = None) -> pd.DataFrame:
        """The newest ``last`` records, oldest first, of one model ``version``, newer than ``since``, and
        with ``profiled`` only those that carry the drift profile (a ``profile_rate``); with ``model``,
        only that registered model's (and records that name none, written before models were named)."""

    def lookup(self, prediction_ids: list[str], post_ids: list[str]) -> pd.DataFrame:
        """``ts``, ``prediction_id`` and ``post_id`` of the records with one of these ids: what joining
        feedback to its predictions needs, without reading the whole store."""


@lru_cache
def engine(url: str) -> sa.Engine:
    """One connection pool per database and process; ``pool_pre_ping`` survives a database restart."""
    return sa.create_engine(url, pool_pre_ping=True)


def create_tables(tables: sa.MetaData, bind: sa.Engine) -> None:
    """Create the missing tables, columns and indexes, also when several replicas start at once; a
    table made by an older version gains the columns added since (all nullable).

    ``IF NOT EXISTS`` makes each statement idempotent where another process wins the race (SQLite);
    PostgreSQL's still races on its catalogue (a unique violation on ``pg_type``), so there a
    transaction-scoped advisory lock lets one creator through at a time.
    """
    with bind.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('popularity-create-tables'))"))
        for table in tables.sorted_tables:
            connection.execute(CreateTable(table, if_not_exists=True))
            present = {column["name"] for column in sa.inspect(connection).get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(connection.dialect)
                    connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))
            for index in table.indexes:
                connection.execute(CreateIndex(index, if_not_exists=True))


class SqlRequestStore:
    """The ``served_requests`` table: what every replica served, queried by version and time."""

    def __init__(self, url: str):
        self.engine = engine(url)
        self.skipped = 0
        create_tables(metadata, self.engine)

    def append(self, records: list[dict]) -> None:
        rows = [{**{c: r.get(c) for c in COLUMNS}, "version": str(r.get("version", "")),
                 "features": {k: v for k, v in r.items() if k not in COLUMNS}} for r in records]
        with self.engine.begin() as connection:
            connection.execute(served.insert(), rows)

    def read(self, last: int | None = None, version: str | None = None, since: float | None = None,
             profiled: bool = False, model: str | None = None) -> pd.DataFrame:
        query = sa.select(served).order_by(served.c.id.desc())
        if model is not None:
            query = query.where(served.c.model.is_(None) | (served.c.model == model))
        if profiled:
            query = query.where(served.c.features["profile_rate"].as_float().is_not(None))
        if version is not None:
            query = query.where(served.c.version == str(version))
        if since is not None:
            query = query.where(served.c.ts >= since)
        if last:
            query = query.limit(last)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return pd.DataFrame([{**row["features"], **{c: row[c] for c in COLUMNS}} for row in reversed(rows)])

    def lookup(self, prediction_ids: list[str], post_ids: list[str]) -> pd.DataFrame:
        query = sa.select(served.c.ts, served.c.prediction_id, served.c.post_id).where(
            served.c.prediction_id.in_(prediction_ids) | served.c.post_id.in_(post_ids))
        with self.engine.connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=list(LOOKUP_COLUMNS))

    def count_by_version(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(served.c.version, sa.func.count()).group_by(served.c.version))
            return {version: count for version, count in rows}


def open_request_store(settings: Settings) -> RequestStore:
    """The shared table when ``store.url`` is set, else the JSON Lines log under the home."""
    if settings.store.url is not None:
        return SqlRequestStore(settings.store.url.get_secret_value())
    d = settings.drift
    return RequestLog(settings.monitoring_dir / "requests", d.log_max_bytes, d.log_backups)


class BatchWriter:
    """Writes records to a store in batches on its own thread; the request path only enqueues.

    A full queue (the store is down for long) drops records and counts them, as does a failed write:
    monitoring data may be lost, an answer may not wait.
    """

    def __init__(self, store: RequestStore, flush_rows: int, flush_interval_s: float, max_rows: int):
        self.store, self.flush_rows, self.interval = store, flush_rows, flush_interval_s
        self.queue: queue.Queue[dict] = queue.Queue(maxsize=max_rows)
        self.written = self.dropped = 0
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._run, name="request-store-writer", daemon=True).start()

    def submit(self, records: list[dict]) -> None:
        for record in records:
            try:
                self.queue.put_nowait(record)
                self._idle.clear()
            except queue.Full:
                self.dropped += 1

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every submitted record has been written (or dropped)."""
        return self._idle.wait(timeout_s)

    def _run(self) -> None:
        while True:
            try:
                batch = [self.queue.get(timeout=self.interval)]
            except queue.Empty:
                self._idle.set()
                continue
            while len(batch) < self.flush_rows:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.store.append(batch)
                self.written += len(batch)
            except Exception:  # the store is down: count the loss and keep serving
                self.dropped += len(batch)
                log.exception("could not write %d request records", len(batch))
            if self.queue.empty():
                self._idle.set()

"""The request store: each served request's prediction id, the caller's post id, score, model name and
version and time, with the monitored features of those profiled for drift. The ids let realized engagement,
known days later, be joined back to what was predicted.

One interface, two places: the JSON Lines log under the home (one machine, the default) and a SQL
table (``POPULARITY_STORE__URL``, the stack's PostgreSQL) that every replica writes and the monitor
reads from any host. The service hands its records to a :class:`BatchWriter`, which writes them in
batches on its own thread, so a slow or unreachable store never delays an answer; a batch the store
refused stays in a bounded buffer and is retried with backoff. The table is created on first use, not
when the store is opened, so a store that is down when the service starts never stops it starting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from functools import lru_cache
from itertools import islice
from typing import Protocol

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from monitoring.request_log import LOOKUP_COLUMNS, RequestLog
from pipelines.settings import Settings

log = logging.getLogger(__name__)
COLUMNS = ("ts", "model", "version", "score", "label", "prediction_id", "post_id")
# Shadow scoring (serving.shadow_share): the challenger's version and score of the same request; only the
# records it scored carry them (null columns elsewhere, and in tables made before them).
SHADOW_COLUMNS = ("shadow_version", "shadow_score")
# and of a request the champion profiled, the challenger's own drift profile: its features under this prefix
# (stored with the other features, the challenger's input-drift view)
SHADOW_PROFILE = "shadow__"
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
    sa.Column("shadow_version", sa.String(64)),
    sa.Column("shadow_score", sa.Float),
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


class TablesOnFirstUse:
    """A database whose ``tables`` are created on first use, not when it is opened, so that a store that is
    down when a service starts never stops it starting: :meth:`ready` creates them (retried on each use
    until it succeeds) and gives the engine."""

    def __init__(self, url: str, tables: sa.MetaData):
        self.engine, self.tables, self.created = engine(url), tables, False

    def ready(self) -> sa.Engine:
        if not self.created:
            create_tables(self.tables, self.engine)
            self.created = True
        return self.engine


class SqlRequestStore:
    """The ``served_requests`` table: what every replica served, queried by version and time."""

    def __init__(self, url: str):
        self.database = TablesOnFirstUse(url, metadata)
        self.skipped = 0

    def append(self, records: list[dict]) -> None:
        rows = [{**{c: r.get(c) for c in COLUMNS + SHADOW_COLUMNS}, "version": str(r.get("version", "")),
                 "features": {k: v for k, v in r.items() if k not in COLUMNS + SHADOW_COLUMNS}} for r in records]
        with self.database.ready().begin() as connection:
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
        with self.database.ready().connect() as connection:
            rows = connection.execute(query).mappings().all()
        return pd.DataFrame([{**row["features"], **{c: row[c] for c in COLUMNS},
                              **{c: row[c] for c in SHADOW_COLUMNS if row[c] is not None}} for row in reversed(rows)])

    def lookup(self, prediction_ids: list[str], post_ids: list[str]) -> pd.DataFrame:
        query = sa.select(served.c.ts, served.c.prediction_id, served.c.post_id).where(
            served.c.prediction_id.in_(prediction_ids) | served.c.post_id.in_(post_ids))
        with self.database.ready().connect() as connection:
            return pd.DataFrame(connection.execute(query).mappings().all(), columns=list(LOOKUP_COLUMNS))

    def count_by_version(self) -> dict[str, int]:
        with self.database.ready().connect() as connection:
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

    A batch the store refuses stays at the head of a buffer and is retried, waiting ``retry_s`` and
    doubling up to ``max_retry_s``: an outage loses nothing the buffer holds. Records beyond
    ``max_rows`` (the queue's bound, and the buffer's) are dropped and counted, oldest first in the
    buffer; so is a batch refused ``max_attempts`` times while the store answers (a record it will
    never take). Monitoring data may be lost, counted; an answer may not wait. ``problem`` says why
    the last write failed (None once one succeeds).
    """

    def __init__(self, store: RequestStore, flush_rows: int, flush_interval_s: float, max_rows: int,
                 retry_s: float = 0.5, max_retry_s: float = 30.0, max_attempts: int = 5):
        self.store, self.flush_rows, self.interval = store, flush_rows, flush_interval_s
        self.max_rows, self.retry_s, self.max_retry_s, self.max_attempts = max_rows, retry_s, max_retry_s, max_attempts
        self.queue: queue.Queue[dict] = queue.Queue(maxsize=max_rows)
        self.buffer: deque[dict] = deque()  # taken from the queue, not yet written: the writer's own
        self.written = self.dropped = 0
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._run, name="request-store-writer", daemon=True).start()

    def submit(self, records: list[dict]) -> None:
        for record in records:
            try:
                self.queue.put_nowait(record)
                self._idle.clear()
            except queue.Full:
                self._drop(1)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every submitted record has been written (or dropped); False after ``timeout_s``."""
        return self._idle.wait(timeout_s)

    def _drop(self, n: int) -> None:
        with self._lock:
            self.dropped += n

    def _take(self, block: bool) -> bool:
        """Move queued records into the buffer (waiting up to the flush interval when ``block``), keeping
        at most ``max_rows``; False when there was nothing to take."""
        try:
            self.buffer.append(self.queue.get(timeout=self.interval) if block else self.queue.get_nowait())
        except queue.Empty:
            return False
        while len(self.buffer) < self.max_rows + self.flush_rows:
            try:
                self.buffer.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if (excess := len(self.buffer) - self.max_rows) > 0:  # the oldest go first
            for _ in range(excess):
                self.buffer.popleft()
            self._drop(excess)
        return True

    def _run(self) -> None:
        delay, attempts = 0.0, 0
        while True:
            if not self.buffer and not self._take(block=True):
                self._idle.set()
                continue
            self._take(block=False)
            batch = list(islice(self.buffer, self.flush_rows))
            try:
                self.store.append(batch)
            except Exception as exc:  # the store is down or refused the batch: keep it, retry, keep serving
                attempts += 1
                unreachable = isinstance(exc, OSError | sa.exc.OperationalError | sa.exc.InterfaceError)
                if self.problem is None:
                    log.warning("could not write %d request records (retrying): %s", len(batch), exc)
                self.problem = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                if unreachable or attempts < self.max_attempts:
                    delay = min(max(2 * delay, self.retry_s), self.max_retry_s)
                    time.sleep(delay)
                    continue
                log.error("dropping %d request records the store refused %d times", len(batch), attempts)
                self._drop(len(batch))
                self.problem = None  # the store answers; what it would not take is gone, counted
            else:
                self.written += len(batch)
                self.problem = None
            for _ in batch:
                self.buffer.popleft()
            delay, attempts = 0.0, 0
            if not self.buffer and self.queue.empty():
                self._idle.set()

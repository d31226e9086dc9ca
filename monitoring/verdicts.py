"""The monitor's latest verdicts, where every service replica reads them.

One row per registered model and kind (``drift``, ``performance``, ``estimate``, ``shadow``): the
newest check that had enough data to decide, as the monitor's summary of it. They live in the
database the retrain cooldown uses (:func:`monitoring.cooldown.state_url`): the shared store
(``POPULARITY_STORE__URL``, the stack's PostgreSQL) when one is set, so that a service on another host
than the monitor (compose, Kubernetes) shows the gauges, else a SQLite file under the home. The
service reads them off the request path (:class:`VerdictCache`), so a slow store never delays a scrape.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitoring.cooldown import state_url
from monitoring.request_store import TablesOnFirstUse
from pipelines.settings import Settings

log = logging.getLogger(__name__)
KINDS = ("drift", "performance", "estimate", "shadow")

metadata = sa.MetaData()
verdicts = sa.Table(
    "monitor_verdicts", metadata,
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("checked_at", sa.Float, nullable=False),
    sa.Column("verdict", sa.JSON, nullable=False),
)
UPSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def plain(value):
    """JSON that every database takes: non-finite floats (PostgreSQL's JSON refuses NaN) become null,
    NumPy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # NumPy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class VerdictStore:
    """The ``monitor_verdicts`` table; the table is made on first use, so a store that is down when a
    service starts does not stop it starting."""

    def __init__(self, url: str):
        self.database = TablesOnFirstUse(url, metadata)
        self.dialect = self.database.engine.dialect.name
        if self.dialect not in UPSERTS:
            raise ValueError(f"the monitor's verdicts need PostgreSQL or SQLite, not {self.dialect}")

    def save(self, model: str, kind: str, verdict: dict, now: float | None = None) -> None:
        """Replace the latest ``kind`` verdict of ``model``."""
        if kind not in KINDS:
            raise ValueError(f"unknown verdict kind {kind!r}; one of {', '.join(KINDS)}")
        row = {"model": model, "kind": kind, "checked_at": time.time() if now is None else now,
               "verdict": plain(verdict)}
        upsert = UPSERTS[self.dialect](verdicts).values(**row)
        upsert = upsert.on_conflict_do_update(index_elements=[verdicts.c.model, verdicts.c.kind],
                                              set_={"checked_at": row["checked_at"], "verdict": row["verdict"]})
        with self.database.ready().begin() as connection:
            connection.execute(upsert)

    def latest(self, model: str) -> dict[str, dict]:
        """``{kind: verdict}`` of ``model``, each with its ``checked_at``; empty before any check."""
        query = sa.select(verdicts).where(verdicts.c.model == model)
        with self.database.ready().connect() as connection:
            rows = connection.execute(query).mappings().all()
        return {row["kind"]: {**row["verdict"], "checked_at": row["checked_at"]} for row in rows}


def open_verdict_store(settings: Settings) -> VerdictStore:
    return VerdictStore(state_url(settings))


class VerdictCache:
    """The latest verdicts of one model as the service's ``/metrics`` shows them: read from the store by
    :meth:`refresh` (the service calls it on a thread every few seconds), never at scrape time. When the
    store cannot be read the verdicts are unknown (empty, so NaN gauges) and ``problem`` says why."""

    def __init__(self, store: VerdictStore, model: str):
        self.store, self.model = store, model
        self.verdicts: dict[str, dict] = {}
        self.problem: str | None = None
        self._lock = threading.Lock()

    def refresh(self) -> dict[str, dict]:
        try:
            found = self.store.latest(self.model)
        except Exception as exc:  # the store is down: unknown, not the last values as if current
            if self.problem is None:
                log.warning("could not read the monitor's verdicts: %s", exc)
            self.problem, found = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}", {}
        else:
            self.problem = None
        with self._lock:
            self.verdicts = found
        return found

    def get(self, kind: str) -> dict | None:
        with self._lock:
            return self.verdicts.get(kind)


def save_verdicts(model: str, settings: Settings, drift=None, realized=None, estimate=None, compared=None) -> None:
    """The monitor's check: each verdict that had enough data to decide (drift, realized performance,
    the estimate before outcomes; the shadow comparison whenever there is one) replaces the last of its
    kind in the store every service replica reads."""
    store = open_verdict_store(settings)
    for kind, result in (("drift", drift), ("performance", realized), ("estimate", estimate)):
        if result is not None and result.enough_data:
            store.save(model, kind, result.summary())
    if compared is not None:
        store.save(model, "shadow", compared.summary())

"""The retrain cooldown: one drift episode starts one retraining, across every host that monitors.

A claim is one row in a database, taken by a single conditional upsert, so two monitor runs on two
hosts cannot both claim: the stack's PostgreSQL (``POPULARITY_STORE__URL``) or, on one machine, a
SQLite file under the home.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from monitoring.request_store import create_tables, engine
from pipelines.settings import Settings

metadata = sa.MetaData()
claims = sa.Table(
    "retrain_claims", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
UPSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def state_url(settings: Settings) -> str:
    """The shared store when one is configured, else a SQLite file under the home."""
    if settings.store.url is not None:
        return settings.store.url.get_secret_value()
    settings.monitoring_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.monitoring_dir / 'state.db'}"


class Cooldown:
    """A claim named ``name`` blocks further claims for ``hours``; a failed retraining gives it back."""

    def __init__(self, url: str, name: str, hours: float):
        self.engine, self.name, self.hours = engine(url), name, hours
        if self.engine.dialect.name not in UPSERTS:
            raise ValueError(f"the retrain cooldown needs PostgreSQL or SQLite, not {self.engine.dialect.name}")
        create_tables(metadata, self.engine)

    @classmethod
    def for_task(cls, task: str, settings: Settings) -> Cooldown:
        return cls(state_url(settings), f"retrain-{settings.model_name(task)}", settings.drift.cooldown_hours)

    def claim(self, reason: str) -> tuple[bool, str]:
        now = time.time()
        upsert = UPSERTS[self.engine.dialect.name](claims).values(name=self.name, claimed_at=now, reason=reason)
        upsert = upsert.on_conflict_do_update(
            index_elements=[claims.c.name], set_={"claimed_at": now, "reason": reason},
            where=claims.c.claimed_at < now - self.hours * 3600).returning(claims.c.name)
        with self.engine.begin() as connection:
            if connection.execute(upsert).first() is not None:
                return True, f"retraining started at {_iso(now)}: {reason}"
            last = connection.execute(sa.select(claims.c.claimed_at).where(claims.c.name == self.name)).scalar_one()
        return False, f"retraining already started at {_iso(last)}; cooldown until {_iso(last + self.hours * 3600)}"

    def retry_after(self, hours: float) -> str:
        """Shorten the claim so that the next one may come ``hours`` from now (never lengthen it): a refused
        retraining leaves production as it was, and the next fresh data should not wait a whole cooldown."""
        now = time.time()
        expires = now + hours * 3600
        with self.engine.begin() as connection:
            connection.execute(claims.update().where(claims.c.name == self.name,
                                                     claims.c.claimed_at > expires - self.hours * 3600)
                               .values(claimed_at=expires - self.hours * 3600))
            last = connection.execute(sa.select(claims.c.claimed_at).where(claims.c.name == self.name)).scalar()
        return f"the next retraining may start after {_iso(now if last is None else last + self.hours * 3600)}"

    def release(self) -> None:
        """Give the claim back: the retraining could not start, or it failed."""
        with self.engine.begin() as connection:
            connection.execute(claims.delete().where(claims.c.name == self.name))


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")

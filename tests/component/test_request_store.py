"""The shared request store and cooldown on a real PostgreSQL database: what every replica writes, the
monitor reads back by version and time; the cooldown holds across processes."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from monitoring.request_log import RequestLog
from monitoring.request_store import BatchWriter, SqlRequestStore, open_request_store
from pipelines.settings import Settings
from tests.unit.test_monitor import overlapping_claims


def _records(version: str, n: int, start: float) -> list[dict]:
    return [{"ts": start + i, "version": version, "score": i / n, "label": i % 2, "brightness": 0.1 * i,
             "pca_1": -1.0 * i} for i in range(n)]


def _store(backend: str, postgres_database: str, tmp_path):
    """The store the settings open: the JSON Lines log under the home, or the PostgreSQL table."""
    settings = Settings(home=tmp_path / "home")
    if backend == "postgresql":
        settings = settings.with_group("store", url=SecretStr(postgres_database))
    return open_request_store(settings)


def test_sql_store_reads_windows_by_version_and_time(postgres_database):
    store = SqlRequestStore(postgres_database)
    store.append(_records("1", 30, 1000.0))
    store.append(_records("2", 20, 2000.0))
    window = store.read(last=10, version="2")
    assert list(window["ts"]) == [2010.0 + i for i in range(10)]  # the newest ten, oldest first
    assert set(window.columns) >= {"ts", "version", "score", "label", "brightness", "pca_1"}
    assert len(store.read(version="1", since=1025.0)) == 5
    assert store.count_by_version() == {"1": 30, "2": 20}
    # a second replica's store object sees the same rows
    assert len(SqlRequestStore(postgres_database).read()) == 50


@pytest.mark.parametrize("backend", ["jsonl", "postgresql"])
def test_both_stores_answer_the_same_query_alike(backend, postgres_database, tmp_path):
    store = _store(backend, postgres_database, tmp_path)
    assert isinstance(store, SqlRequestStore if backend == "postgresql" else RequestLog)
    store.append(_records("3", 40, 0.0) + _records("4", 5, 100.0))
    frame = store.read(last=25, version="3", since=10.0)
    assert list(frame["ts"]) == [15.0 + i for i in range(25)]
    pd.testing.assert_series_equal(frame["brightness"], pd.Series([0.1 * (15 + i) for i in range(25)]),
                                   check_names=False)


@pytest.mark.parametrize("backend", ["jsonl", "postgresql"])
def test_each_tasks_service_reads_back_its_own_model_though_versions_repeat(backend, postgres_database, tmp_path):
    """The binary and the score service write one store, each its v1: a window of one model's v1 holds
    that model's records, and those written before records named their model."""
    store = _store(backend, postgres_database, tmp_path)
    store.append(_records("1", 3, 0.0))  # written before the model was recorded
    store.append([{**r, "model": "popularity-binary"} for r in _records("1", 5, 10.0)])
    store.append([{**r, "model": "popularity-score"} for r in _records("1", 4, 20.0)])
    score = store.read(version="1", model="popularity-score")
    assert list(score["ts"]) == [0.0, 1.0, 2.0, 20.0, 21.0, 22.0, 23.0]
    assert set(score["model"].dropna()) == {"popularity-score"}
    assert len(store.read(last=4, version="1", model="popularity-binary", since=5.0)) == 4
    assert len(store.read(version="1")) == 12


def test_a_table_from_before_the_ids_gains_them_and_refuses_a_repeated_prediction_id(postgres_database):
    """Replicas of a newer version start against the table an older one made: it gains the id columns."""
    before = sa.MetaData()
    sa.Table("served_requests", before,
             sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
             sa.Column("ts", sa.Float, nullable=False), sa.Column("version", sa.String(64), nullable=False),
             sa.Column("score", sa.Float), sa.Column("label", sa.Integer), sa.Column("features", sa.JSON, nullable=False))
    old = sa.create_engine(postgres_database)
    before.create_all(old)
    with old.begin() as connection:
        connection.execute(sa.text("INSERT INTO served_requests (ts, version, score, label, features) "
                                   "VALUES (1.0, '1', 0.5, 1, '{}')"))
    old.dispose()
    store = SqlRequestStore(postgres_database)
    store.append([{**_records("1", 1, 2.0)[0], "prediction_id": "a" * 32, "post_id": "post-7"}])
    frame = store.read()
    assert frame["prediction_id"].isna().tolist() == [True, False] and frame["post_id"].iloc[1] == "post-7"
    with pytest.raises(sa.exc.IntegrityError):
        store.append([{**_records("1", 1, 3.0)[0], "prediction_id": "a" * 32}])


def test_batch_writer_keeps_the_request_path_free_and_writes_everything(postgres_database):
    store = SqlRequestStore(postgres_database)
    writer = BatchWriter(store, flush_rows=64, flush_interval_s=0.05, max_rows=10_000)
    start = time.perf_counter()
    for i in range(100):
        writer.submit(_records("5", 10, 10.0 * i))
    submitted_s = time.perf_counter() - start
    assert writer.flush(30)
    assert writer.written == 1000 and writer.dropped == 0
    assert store.count_by_version() == {"5": 1000}
    assert submitted_s < 1.0, "submitting must only enqueue"


class _DownStore:
    skipped = 0

    def append(self, records):
        raise OSError("the database is down")


def test_batch_writer_counts_what_an_unreachable_store_loses():
    writer = BatchWriter(_DownStore(), flush_rows=8, flush_interval_s=0.05, max_rows=20, retry_s=0.02)
    writer.submit(_records("6", 50, 0.0))  # beyond the bounds of 20 (queue and retry buffer), dropped and counted
    assert not writer.flush(1)  # the rest is kept for when the store is back
    assert 10 <= writer.dropped <= 30 and writer.written == 0 and "down" in writer.problem


def test_overlapping_claims_on_postgresql_grant_exactly_one(postgres_database):
    """The stack's case: monitor runs on several hosts share one PostgreSQL database."""
    assert overlapping_claims(postgres_database) == [False] * 5 + [True]


@pytest.mark.parametrize("backend", ["jsonl", "postgresql"])
def test_the_monitor_reads_only_the_requests_profiled_for_drift(backend, postgres_database, tmp_path):
    """Every answer is stored; under load only a sample carries the profile, and only those are a window."""
    store = _store(backend, postgres_database, tmp_path)
    records = _records("5", 30, 0.0)
    for i, record in enumerate(records):
        if i % 3:
            record.update(profile_rate=0.5)
        else:  # answered, not profiled: score and version only
            del record["brightness"], record["pca_1"]
    store.append(records)
    assert len(store.read(version="5")) == 30
    window = store.read(last=8, version="5", profiled=True)
    assert list(window["ts"]) == [t for t in range(30) if t % 3][-8:]
    assert window["brightness"].notna().all() and (window["profile_rate"] == 0.5).all()


@pytest.mark.parametrize("backend", ["jsonl", "postgresql"])
def test_both_stores_look_up_the_predictions_feedback_names(backend, postgres_database, tmp_path):
    store = _store(backend, postgres_database, tmp_path)
    store.append([{"ts": float(i), "version": "1", "score": 0.5, "label": 1, "prediction_id": f"{i:032x}",
                   "post_id": f"post-{i % 3}"} for i in range(9)])
    found = store.lookup([f"{1:032x}", "f" * 32], ["post-2"])
    assert list(found.columns) == ["ts", "prediction_id", "post_id"]
    assert sorted(found["prediction_id"]) == [f"{i:032x}" for i in (1, 2, 5, 8)]
    assert store.lookup([], []).empty

"""The service's request writer against a store that is lost and comes back: a SQLite request store
whose folder is missing (every connection fails, as with a database that is down) until it is made."""

from __future__ import annotations

import pytest

from monitoring.request_store import BatchWriter, SqlRequestStore


def _records(n: int, start: int = 0) -> list[dict]:
    return [{"ts": float(start + i), "version": "1", "score": 0.5, "label": 1, "prediction_id": f"{start + i:032x}"}
            for i in range(n)]


@pytest.fixture
def lost(tmp_path):
    """A store whose database cannot be opened until its folder exists, and that folder."""
    folder = tmp_path / "not-yet"
    return SqlRequestStore(f"sqlite:///{folder / 'requests.db'}"), folder


def test_a_store_down_at_start_opens_and_a_failed_batch_is_retried_until_written(lost):
    store, folder = lost  # opening it created no table and raised nothing
    writer = BatchWriter(store, flush_rows=4, flush_interval_s=0.02, max_rows=100, retry_s=0.02, max_retry_s=0.1)
    writer.submit(_records(10))
    assert not writer.flush(0.5)  # the writer says why it cannot write
    assert writer.problem and "OperationalError" in writer.problem
    assert writer.written == 0 and writer.dropped == 0
    folder.mkdir()  # the store is back
    assert writer.flush(10.0)
    assert writer.written == 10 and writer.dropped == 0 and writer.problem is None
    assert store.read()["prediction_id"].tolist() == [f"{i:032x}" for i in range(10)]


def test_the_retry_buffer_is_bounded_and_what_it_drops_is_counted(lost):
    store, folder = lost
    writer = BatchWriter(store, flush_rows=8, flush_interval_s=0.02, max_rows=20, retry_s=0.02, max_retry_s=0.05)
    for k in range(10):
        writer.submit(_records(10, 10 * k))
    assert not writer.flush(0.5)
    folder.mkdir()
    assert writer.flush(10.0)
    assert writer.written + writer.dropped == 100
    assert 20 <= writer.written <= 40 and len(store.read()) == writer.written  # the queue's 20 and the buffer's


def test_a_batch_the_store_keeps_refusing_is_dropped_counted_and_the_rest_still_written(tmp_path):
    store = SqlRequestStore(f"sqlite:///{tmp_path / 'requests.db'}")
    writer = BatchWriter(store, flush_rows=1, flush_interval_s=0.02, max_rows=100, retry_s=0.01, max_retry_s=0.02,
                         max_attempts=3)
    writer.submit(_records(1))
    assert writer.flush(5.0)
    writer.submit(_records(1, 1) + _records(1))  # then the same prediction id again: a unique violation, every time
    assert writer.flush(5.0)
    assert writer.written == 2 and writer.dropped == 1
    assert writer.problem is None  # the store answers: /feedback is not held at 503 by a dropped batch
    assert store.read()["prediction_id"].tolist() == [f"{0:032x}", f"{1:032x}"]

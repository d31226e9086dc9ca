"""The monitor's latest verdicts in the store every service replica reads: written through one home,
read through another that shares the store's URL (the monitor in the worker, the service elsewhere), and
the gauges of /metrics made from them; on one machine the SQLite file under the home still serves."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import check_drift
from monitoring.estimation import EstimateResult
from monitoring.performance import PerformanceResult
from monitoring.verdicts import VerdictCache, open_verdict_store, save_verdicts
from pipelines.settings import Settings
from serving.metrics import ServiceMetrics

MODEL = "popularity-binary"


def _home(tmp_path, name: str, url: str | None) -> Settings:
    return Settings(home=tmp_path / name, store={"url": url} if url else {})


def _drifted():
    """A real drift verdict: brightness shifted by half its spread."""
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"brightness": rng.normal(0.5, 0.1, 400), "score": rng.uniform(0, 1, 400)})
    current = pd.DataFrame({"brightness": rng.normal(0.3, 0.1, 200), "score": rng.uniform(0, 1, 200)})
    result = check_drift(reference, current, 0.01, 0.3, 50, permutations=20)
    assert result.enough_data and result.drift
    return result


def _realized() -> PerformanceResult:
    return PerformanceResult(version="3", metric="roc_auc", value=0.61, low=0.55, high=0.67, share=0.4,
                             enough_data=True, decay=True, outcomes=120, message="decay")


def _gauge(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
    return float(line.rsplit(" ", 1)[1])


def _scrape(cache: VerdictCache) -> str:
    cache.refresh()
    return (ServiceMetrics.drift_lines(cache.get("drift"))
            + ServiceMetrics.performance_lines(cache.get("performance"), cache.get("estimate")))


def test_a_verdict_written_through_one_home_shows_in_a_service_of_another_home_on_the_same_store(
        tmp_path, postgres_database):
    monitor, service = _home(tmp_path, "worker", postgres_database), _home(tmp_path, "service", postgres_database)
    cache = VerdictCache(open_verdict_store(service), MODEL)
    before = _scrape(cache)
    assert np.isnan(_gauge(before, "popularity_drift")) and np.isnan(_gauge(before, "popularity_realized_metric"))

    drift = _drifted()
    estimate = EstimateResult(version="3", value=0.7, low=0.65, high=0.75, requests=300, enough_data=True)
    save_verdicts(MODEL, monitor, drift, _realized(), estimate)
    text = _scrape(cache)
    assert _gauge(text, "popularity_drift") == 1.0
    assert _gauge(text, "popularity_drifted_share") == pytest.approx(drift.drifted_share, abs=1e-4)
    assert 'popularity_realized_metric{version="3",metric="roc_auc"} 0.61' in text
    assert _gauge(text, "popularity_decay") == 1.0
    assert 'popularity_estimated_metric{version="3",metric="roc_auc"} 0.7' in text
    assert not (service.monitoring_dir / "state.db").exists()  # nothing of it came from the service's home


def test_the_newest_verdict_replaces_the_last_and_one_without_enough_data_changes_nothing(tmp_path, postgres_database):
    settings = _home(tmp_path, "worker", postgres_database)
    store = open_verdict_store(settings)
    save_verdicts(MODEL, settings, _drifted())
    quiet = check_drift(pd.DataFrame({"brightness": [0.5] * 100}), pd.DataFrame({"brightness": [0.5] * 3}),
                        0.01, 0.3, 50)
    save_verdicts(MODEL, settings, quiet)  # 3 requests: no decision, the last verdict stands
    assert store.latest(MODEL)["drift"]["drift"] is True
    calm = check_drift(pd.DataFrame({"brightness": np.linspace(0, 1, 200)}),
                       pd.DataFrame({"brightness": np.linspace(0, 1, 100)}), 0.01, 0.3, 50, permutations=20)
    save_verdicts(MODEL, settings, calm)
    latest = store.latest(MODEL)["drift"]
    assert latest["drift"] is False and latest["checked_at"] <= time.time()
    assert store.latest("popularity-score") == {}  # the other task's service sees its own verdicts only


def test_non_finite_figures_are_stored_as_nulls_and_read_back_as_nan_gauges(tmp_path, postgres_database):
    settings = _home(tmp_path, "worker", postgres_database)
    realized = PerformanceResult(version="2", metric="roc_auc", value=0.6, low=float("nan"), high=np.float64("inf"),
                                 share=0.5, enough_data=True)
    save_verdicts(MODEL, settings, realized=realized)  # PostgreSQL's JSON refuses NaN: it must not reach it
    text = _scrape(VerdictCache(open_verdict_store(settings), MODEL))
    assert 'popularity_realized_metric{version="2",metric="roc_auc"} 0.6' in text
    assert 'popularity_realized_metric_low{version="2",metric="roc_auc"} nan' in text


def test_one_machine_keeps_its_verdicts_in_the_homes_sqlite_file(tmp_path):
    settings = _home(tmp_path, "home", None)
    save_verdicts(MODEL, settings, _drifted())
    assert (settings.monitoring_dir / "state.db").exists()
    assert _gauge(_scrape(VerdictCache(open_verdict_store(Settings(home=tmp_path / "home")), MODEL)),
                  "popularity_drift") == 1.0
    # a service on another home without a shared store has no verdict: NaN, not someone else's figure
    assert np.isnan(_gauge(_scrape(VerdictCache(open_verdict_store(_home(tmp_path, "other", None)), MODEL)),
                           "popularity_drift"))


def test_a_store_that_cannot_be_read_leaves_the_gauges_unknown_and_says_why(tmp_path):
    settings = _home(tmp_path, "home", None)
    save_verdicts(MODEL, settings, _drifted())
    cache = VerdictCache(open_verdict_store(settings), MODEL)
    assert _gauge(_scrape(cache), "popularity_drift") == 1.0
    cache.store = open_verdict_store(_home(tmp_path, "lost", "postgresql+psycopg2://postgres@127.0.0.1:9/nowhere"))
    assert np.isnan(_gauge(_scrape(cache), "popularity_drift"))  # not the old value as if it were current
    assert cache.problem and "OperationalError" in cache.problem

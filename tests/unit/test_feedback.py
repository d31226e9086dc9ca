"""Feedback: realized engagement joined to its prediction, bad rows rejected with reasons; realized
performance with bootstrap intervals and the decay verdict."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from monitoring import feedback, performance
from monitoring.request_store import open_request_store
from serving.metrics import ServiceMetrics

HOUR = 3600.0


def _serve(settings, n: int, scores=None, version: str = "1", ts: float | None = None) -> list[str]:
    """Record ``n`` answered predictions as the service does; returns their prediction ids."""
    ts = time.time() - HOUR if ts is None else ts
    scores = np.linspace(0, 1, n) if scores is None else scores
    ids = [f"{version}{i:031x}" for i in range(n)]
    open_request_store(settings).append([
        {"ts": ts + i, "version": version, "score": float(s), "label": int(s > 0.5), "prediction_id": p,
         "post_id": f"post-{version}-{i}"} for i, (p, s) in enumerate(zip(ids, scores, strict=True))])
    return ids


def _record(settings, rows: list[dict], **kwargs) -> feedback.FeedbackResult:
    return feedback.record(pd.DataFrame(rows), settings, mode="ephemeral", **kwargs)


def test_feedback_is_joined_to_its_prediction_by_id_or_by_post(settings):
    ids = _serve(settings, 3)
    result = _record(settings, [{"prediction_id": ids[0], "likes": 5, "followers": 100},
                                {"post_id": "post-1-1", "likes": 7, "followers": 100}])
    assert result.accepted == 2 and result.rejected.empty
    stored = feedback.open_feedback_store(settings).read()
    assert list(stored["prediction_id"]) == ids[:2] and list(stored["likes"]) == [5, 7]
    assert stored["post_id"].iloc[1] == "post-1-1"


def test_observation_times_may_be_datetimes_strings_numbers_or_missing(settings):
    ids = _serve(settings, 4)
    now = time.time()
    moments = [pd.Timestamp(now - 60, unit="s", tz="UTC"), pd.NaT, None, np.nan]
    result = _record(settings, [{"prediction_id": p, "likes": 1, "observed_at": m} for p, m in zip(ids, moments)],
                     now=now)
    assert result.accepted == 4
    stored = feedback.open_feedback_store(settings).read().set_index("prediction_id")["observed_at"]
    assert stored[ids[0]] == pytest.approx(now - 60) and (stored[ids[1:]] == now).all()


def test_a_post_id_belongs_to_its_first_prediction_a_later_caller_does_not_capture_it(settings):
    """The owner rule: outcomes by ``post_id`` go to the first prediction made with it; another caller
    predicting later with the same post id gets its own prediction id, not the post's outcomes."""
    (first,) = _serve(settings, 1, ts=time.time() - 2 * HOUR)
    first_post = open_request_store(settings).read()["post_id"].iloc[0]
    later = f"{'2':0>32}"
    open_request_store(settings).append([{"ts": time.time() - HOUR, "version": "1", "score": 0.4, "label": 0,
                                          "prediction_id": later, "post_id": first_post}])
    assert _record(settings, [{"post_id": first_post, "likes": 3}]).accepted == 1
    assert feedback.open_feedback_store(settings).read()["prediction_id"].tolist() == [first]


def test_a_row_naming_one_posts_prediction_with_another_post_id_is_refused(settings):
    ids = _serve(settings, 3)  # post-1-0, post-1-1, post-1-2
    unnamed = f"{'3':0>32}"
    open_request_store(settings).append([{"ts": time.time() - HOUR, "version": "1", "score": 0.4, "label": 0,
                                          "prediction_id": unnamed}])
    result = _record(settings, [{"prediction_id": ids[0], "post_id": "post-1-1", "likes": 9},
                                {"prediction_id": unnamed, "post_id": "post-1-2", "likes": 9},
                                {"prediction_id": ids[2], "post_id": "post-1-2", "likes": 4}])
    assert result.accepted == 1
    assert {r["index"]: r["reasons"] for r in result.summary()["rejected_rows"]} == {
        0: ["post_id_of_prediction"], 1: ["post_id_of_prediction"]}
    stored = feedback.open_feedback_store(settings).read()
    assert stored["prediction_id"].tolist() == [ids[2]] and stored["post_id"].tolist() == ["post-1-2"]


def test_bad_feedback_is_rejected_with_reasons_and_kept(settings):
    ids = _serve(settings, 6)
    now = time.time()
    _record(settings, [{"prediction_id": ids[5], "likes": 50, "observed_at": now - 60}])
    result = _record(settings, [
        {"prediction_id": ids[0], "likes": 10},                       # fine
        {"prediction_id": "f" * 32, "likes": 10},                     # no such prediction
        {"post_id": "a-post-never-served", "likes": 10},              # no such post
        {"prediction_id": ids[1], "likes": -3},                       # negative
        {"prediction_id": ids[2], "likes": 4, "observed_at": now - 30},
        {"prediction_id": ids[2], "likes": 4, "observed_at": now - 30},  # the same observation again
        {"prediction_id": ids[3], "views_d1": 10, "views_d2": 8},     # daily views fell
        {"prediction_id": ids[4]},                                    # no engagement at all
        {"prediction_id": ids[5], "likes": 20},                       # fewer than the stored 50
        {"prediction_id": ids[0], "likes": 1, "observed_at": now - 3 * HOUR},  # before the prediction
        {"prediction_id": ids[0], "likes": 12, "observed_at": now + 2 * HOUR},  # in the future
        {"prediction_id": ids[0], "likes": 13, "observed_at": "next tuesday"},
    ], now=now)
    assert result.accepted == 2
    reasons = result.summary()["rejected_rows"]
    assert {r["index"]: r["reasons"] for r in reasons} == {
        1: ["id_known"], 2: ["id_known"], 3: ["likes_non_negative"], 5: ["no_duplicate"],
        6: ["counts_non_decreasing"], 7: ["engagement_given"], 8: ["counts_non_decreasing"],
        9: ["observed_after_prediction"], 10: ["observed_not_in_future"], 11: ["observed_at_readable"]}
    kept = pd.read_parquet(result.rejected_path)
    assert len(kept) == 10 and kept["reasons"].str.len().gt(0).all()
    assert "likes_non_negative: 1" in result.message


def test_rows_the_source_could_not_read_are_reported_with_the_rest(settings):
    ids = _serve(settings, 1)
    result = _record(settings, [{"prediction_id": ids[0], "likes": 1}],
                     rejects=[{"ref": "outcomes.csv:7", "reasons": "missing_file", "message": "x does not exist"}])
    assert result.accepted == 1 and result.reasons == {"missing_file": 1}
    assert pd.read_parquet(result.rejected_path)["ref"].tolist() == ["outcomes.csv:7"]


def test_images_of_accepted_rows_are_kept_for_retraining(settings, photographs):
    from tests.conftest import encode

    ids = _serve(settings, 2)
    data = encode(photographs["astronaut"])
    _record(settings, [{"prediction_id": ids[0], "likes": 10, "followers": 50, "user_id": "u1"},
                       {"prediction_id": "e" * 32, "likes": 3}], images=[(data, "JPEG"), (data, "JPEG")])
    manifest = pd.read_json(feedback.export_manifest(settings), lines=True, dtype={"prediction_id": str})
    assert manifest["prediction_id"].tolist() == [ids[0]] and manifest["likes"].tolist() == [10]
    assert (settings.feedback_dir / manifest["image"].iloc[0]).read_bytes() == data


def test_realized_auc_is_the_mann_whitney_auc():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 300)
    score = np.round(label * 0.3 + rng.uniform(0, 1, 300), 2)  # with ties
    assert performance.roc_auc(score, label) == pytest.approx(roc_auc_score(label, score))


def _outcomes(ids: list[str], ratio: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"prediction_id": ids, "likes": np.round(ratio * 1000), "followers": 1000.0,
                         "observed_at": time.time(), "id": range(len(ids))})


def _champion(test_auc: float = 0.85) -> dict:
    return {"version": "1", "metrics": {"roc_auc": test_auc}, "label": "median-split"}


@pytest.mark.parametrize(("agreement", "decay"), [(1.0, False), (-1.0, True)])
def test_decay_is_declared_only_when_the_whole_interval_is_below_the_floor(settings, agreement, decay):
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, 200)
    ids = _serve(settings, 200, scores)
    ratio = np.clip(0.5 + agreement * (scores - 0.5) + rng.normal(0, 0.15, 200), 0.001, None)
    result = performance.evaluate(open_request_store(settings).read(), _outcomes(ids, ratio), _champion(), "binary",
                                  settings.performance)
    assert result.enough_data and result.outcomes == 200 and result.share == 1.0
    assert result.low <= result.value <= result.high
    assert result.decay is decay and (result.high < 0.75) is decay
    assert len(result.calibration) > 3 and 0 <= result.brier <= 1
    assert result.message.startswith("decay" if decay else "no decay")


def test_popular_means_above_the_windows_own_median_not_the_historys(settings):
    """200 outcomes that agreed with the scores, then 200 that turned at a lower level of engagement: the
    check judges the newest window (200), labelled above that window's median likes/followers, and its
    realized AUC is what scikit-learn computes on those labels (against the history's median every post
    of the window would be unpopular)."""
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 400)
    ids = _serve(settings, 400, scores)
    agreed = 0.6 + 0.3 * scores[:200] + rng.normal(0, 0.02, 200)
    turned = 0.3 - 0.2 * scores[200:] + rng.normal(0, 0.08, 200)
    ratio = np.concatenate([agreed, turned])
    result = performance.evaluate(open_request_store(settings).read(), _outcomes(ids, ratio), _champion(), "binary",
                                  settings.performance)
    likes = np.round(turned * 1000)
    window_labels = (likes > np.median(likes)).astype(int)
    assert result.outcomes == 200
    assert result.value == pytest.approx(roc_auc_score(window_labels, scores[200:]))
    assert result.value < 0.3 and result.decay
    assert performance.evaluate(open_request_store(settings).read(), _outcomes(ids[:200], agreed), _champion(),
                                "binary", settings.performance).value > 0.9


def test_few_outcomes_or_no_label_scheme_decide_nothing(settings):
    ids = _serve(settings, 100)
    observed = _outcomes(ids[:20], np.linspace(0.1, 0.9, 20))
    few = performance.evaluate(open_request_store(settings).read(), observed, _champion(), "binary",
                               settings.performance)
    assert not few.enough_data and not few.decay and "fewer than 50" in few.message
    unlabelled = performance.evaluate(open_request_store(settings).read(), observed, {"version": "1"}, "binary",
                                      settings.performance)
    assert not unlabelled.decay and "no label scheme" in unlabelled.message


def test_the_share_with_outcomes_counts_the_windows_predictions(settings):
    ids = _serve(settings, 200)
    observed = _outcomes(ids[::2], np.linspace(0.1, 0.9, 100))
    result = performance.evaluate(open_request_store(settings).read(), observed, _champion(), "binary",
                                  settings.performance)
    assert result.predictions == 199 and result.share == pytest.approx(100 / 199)
    assert result.share_low < result.share < result.share_high


def test_metrics_expose_the_realized_performance_gauges():
    assert 'popularity_realized_metric{version="",metric=""} nan' in ServiceMetrics.performance_lines(None)
    check = {"version": "3", "metric": "roc_auc", "value": 0.61, "low": 0.55, "high": 0.67, "share": 0.4, "decay": True}
    lines = ServiceMetrics.performance_lines(check)
    assert 'popularity_realized_metric_high{version="3",metric="roc_auc"} 0.67' in lines
    assert "popularity_decay 1.0" in lines


def test_the_report_draws_realized_performance_beside_input_drift(settings, tmp_path):
    from monitoring.drift import DriftResult
    from monitoring.report import write_report

    rng = np.random.default_rng(2)
    scores = rng.uniform(0, 1, 150)
    ids = _serve(settings, 150, scores)
    realized = performance.evaluate(open_request_store(settings).read(),
                                    _outcomes(ids, np.clip(scores + rng.normal(0, 0.2, 150), 0.01, None)),
                                    _champion(), "binary", settings.performance)
    quiet = DriftResult(window=10, enough_data=False, message="10 requests: too few to judge")
    page = write_report(quiet, pd.DataFrame(), pd.DataFrame(), tmp_path / "report", realized, 0.1).read_text()
    assert (tmp_path / "report" / "performance.png").stat().st_size > 0
    assert "Realized performance" in page and "no decay: realized roc_auc" in page and "too few to judge" in page
    assert len(realized.over_time) == 1 and realized.over_time["outcomes"].iloc[0] == 150


def test_an_absurd_count_from_any_source_is_rejected_and_holds_no_later_observation_back(settings):
    """likes=1e300 once would make every genuine later observation of the post fail counts_non_decreasing."""
    ids = _serve(settings, 1)
    now = time.time()
    first = _record(settings, [{"prediction_id": ids[0], "likes": 1e300, "observed_at": now - 60}], now=now)
    assert first.accepted == 0 and first.summary()["rejected_rows"] == [{"index": 0, "reasons": ["likes_at_most_1e12"]}]
    assert _record(settings, [{"prediction_id": ids[0], "likes": 40, "observed_at": now - 30}], now=now).accepted == 1

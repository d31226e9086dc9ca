"""Each label scheme of the seeds, its filters, and the reasons for the rows it drops."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data import labels


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    posted = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 100, n), unit="D")
    views = rng.integers(10, 1000, n)
    frame = pd.DataFrame({
        "source_ref": [f"r{i}" for i in range(n)], "likes": rng.integers(0, 200, n),
        "followers": rng.integers(50, 2000, n), "favorites": rng.poisson(0.3, n), "views": views, "posted_at": posted,
    })
    days = np.linspace(0.1, 1, 30)
    for d in range(30):
        frame[f"views_d{d + 1}"] = np.round(views * days[d])
    return frame


def test_given_accepts_booleans_and_words_and_drops_the_rest():
    frame = pd.DataFrame({"source_ref": list("abcde"), "label": [True, "0", "true", "maybe", None]})
    out, dropped = labels.apply("given", frame)
    assert out["label"].tolist() == [1, 0, 1]
    assert dict(zip(dropped["source_ref"], dropped["drop_reason"])) == {
        "d": "the label is not 0/1 or true/false", "e": "no value for label"}


def test_median_split_is_balanced_and_filters_follower_outliers():
    frame = _frame(41)
    frame.loc[0, "followers"] = 10_000_000  # a celebrity account (seed 003's MAD filter)
    out, dropped = labels.apply("median-split", frame)
    assert "r0" in set(dropped["source_ref"]) and "MAD" in dropped["drop_reason"].iloc[0]
    assert abs(out["label"].mean() - 0.5) <= 0.05
    ratio = out["likes"] / out["followers"]
    assert (out["label"] == (ratio > ratio.median())).all() and "score" in out


def test_the_mad_filter_counts_each_user_once():
    """Seed 003 filtered users: a user with many photos must not drag the median and MAD towards itself."""
    prolific = pd.DataFrame({"source_ref": [f"p{i}" for i in range(30)], "user_id": "prolific",
                             "followers": 50_000, "likes": 10})
    others = pd.DataFrame({"source_ref": [f"u{i}" for i in range(20)], "user_id": [f"u{i}" for i in range(20)],
                           "followers": np.linspace(900, 1100, 20).round(), "likes": 5})
    frame = pd.concat([prolific, others], ignore_index=True)
    out, dropped = labels.apply("median-split", frame)
    # per image, the prolific user's 30 rows are the majority and would set the median themselves
    assert labels.mad_filter(frame["followers"].astype(float))[:30].all()
    assert set(dropped["source_ref"]) == {f"p{i}" for i in range(30)} and len(out) == 20
    assert "MAD of users" in dropped["drop_reason"].iloc[0]


def test_favorited_is_at_least_one_favorite():
    out, _ = labels.apply("favorited", _frame())
    assert (out["label"] == (out["favorites"] >= 1)).all()


def test_deciles_are_ten_equal_frequency_bins():
    out, _ = labels.apply("deciles", _frame(100))
    assert out["score"].value_counts().tolist() == [10] * 10
    assert out.sort_values("views")["score"].is_monotonic_increasing
    with pytest.raises(labels.LabelError, match="at least 10"):
        labels.apply("deciles", _frame(5))


def test_score_and_the_sequence_scale_and_shape():
    frame = _frame()
    out, _ = labels.apply("score", frame)
    now = frame["posted_at"].max() + pd.Timedelta(days=30)
    days = (now - frame["posted_at"]).dt.total_seconds() / 86400
    np.testing.assert_allclose(out["score"], np.log(frame["views"] / days + 1))
    assert (out["seq_scale"] == frame["views_d30"]).all()
    shape = out[[f"seq_shape_d{d}" for d in range(1, 31)]].to_numpy()
    np.testing.assert_allclose(shape[:, -1], 1.0)
    np.testing.assert_allclose(shape * out["seq_scale"].to_numpy()[:, None],
                               frame[[f"views_d{d}" for d in range(1, 31)]].to_numpy())


def test_likes_is_a_log_regression_target():
    out, _ = labels.apply("likes", _frame())
    np.testing.assert_allclose(out["score"], np.log1p(out["likes"]))


def test_six_sigma_outliers_are_dropped_first():
    frame = _frame(200)
    frame.loc[3, "views"] = 10**9
    out, dropped = labels.apply("deciles", frame, drop_outliers=True)
    assert dropped["source_ref"].tolist() == ["r3"] and "6 SD" in dropped["drop_reason"].iloc[0]
    assert len(out) == 199


def test_six_sigma_filters_every_engagement_count():
    frame = _frame(200)
    frame.loc[3, "views"], frame.loc[5, "favorites"], frame.loc[7, "likes"] = 10**9, 10**6, 10**8
    out, dropped = labels.apply("likes", frame, drop_outliers=True)
    assert dict(zip(dropped["source_ref"], dropped["drop_reason"])) == {
        "r3": "views more than 6 SD above the mean", "r5": "favorites more than 6 SD above the mean",
        "r7": "likes more than 6 SD above the mean"}
    assert len(out) == 197
    with pytest.raises(labels.LabelError, match="engagement count"):
        labels.apply("given", pd.DataFrame({"label": [1, 0]}), drop_outliers=True)


def test_missing_values_and_columns():
    frame = _frame(12)
    frame.loc[2, "views"] = np.nan
    out, dropped = labels.apply("score", frame)
    assert dropped["drop_reason"].tolist() == ["no value for views"] and len(out) == 11
    with pytest.raises(labels.LabelError, match="followers"):
        labels.apply("median-split", frame.drop(columns="followers"))
    with pytest.raises(labels.LabelError, match="unknown label scheme"):
        labels.apply("viral", frame)

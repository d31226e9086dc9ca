"""Metrics on numbers worked out by hand."""

from __future__ import annotations

import numpy as np

from pipelines import evaluation


def test_seed_004s_percentage_difference_is_on_the_counts_a_log_score_stands_for():
    # seed 004's photo: 96 likes; predictions of 113.2 (+17.9%), 48 (-50%) and 96 likes; a post with no likes
    likes = np.array([96, 96, 96, 0])
    predicted = np.array([96 * 1.179, 48, 96, 5])
    pct = evaluation.median_percentage_difference(np.log1p(likes), np.log1p(predicted))
    assert abs(pct - 17.9) < 1e-6  # the median of 17.9, 50 and 0; the zero count has no percentage
    metrics = evaluation.regression_metrics(np.log1p(likes), np.log1p(predicted))
    assert metrics["median_pct_diff"] == pct
    assert np.isnan(evaluation.median_percentage_difference(np.zeros(3), np.ones(3)))

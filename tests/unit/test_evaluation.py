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


def test_the_bootstrap_standard_error_is_scikit_learns_and_scipys_metric_over_the_same_resamples():
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    labels, truth = rng.integers(0, 2, 40), rng.normal(size=40)
    score = np.round(rng.random(40), 1)  # ties, which both metrics average
    rows = np.random.default_rng(7).integers(0, 40, (200, 40))  # the resamples bootstrap_se draws with seed 7
    aucs = [roc_auc_score(labels[r], score[r]) for r in rows if len(np.unique(labels[r])) == 2]
    rhos = [spearmanr(truth[r], score[r]).statistic for r in rows]
    assert abs(evaluation.bootstrap_se(labels, score, "roc_auc", seed=7) - np.std(aucs, ddof=1)) < 1e-12
    assert abs(evaluation.bootstrap_se(truth, score, "spearman", seed=7) - np.std(rhos, ddof=1)) < 1e-12
    # resamples with one class have no AUC; constant scores no correlation: nothing to estimate from
    assert np.isnan(evaluation.bootstrap_se(np.ones(40), score, "roc_auc"))
    assert np.isnan(evaluation.bootstrap_se(truth, np.zeros(40), "spearman"))


def test_the_gap_interval_holds_the_gap_and_widens_when_a_users_posts_share_their_error():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(5)
    users = rng.integers(0, 20, 200)
    reference = rng.normal(size=200)
    y = reference + rng.normal(0, 0.5, 200)
    score = reference + rng.normal(0, 0.8, 20)[users]  # the model misjudges each user's posts alike
    gap = spearmanr(y, reference).statistic - spearmanr(y, score).statistic
    low, high = evaluation.spearman_gap_interval(y, reference, score, users)
    assert 0 < low < gap < high
    row_low, row_high = evaluation.spearman_gap_interval(y, reference, score, np.arange(200))
    assert high - low > 1.3 * (row_high - row_low)  # 20 users are fewer independent draws than 200 posts
    assert evaluation.spearman_gap_interval(y, reference, reference, users) == (0.0, 0.0)


def test_the_image_grid_shows_every_image_with_its_score(tmp_path):
    from PIL import Image

    images = [Image.new("RGB", (300, 200), (255, 0, 0))] * 7 + [np.zeros((50, 80, 3), np.uint8)]
    path = evaluation.image_grid(images, np.linspace(1, 0, 8), "Top 25", tmp_path)
    assert path.name == "top_25.png"
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape[1] == 5 * 150 and sheet.shape[0] > 2 * 150  # two rows of five
    red = (sheet[..., 0] > 200) & (sheet[..., 1] < 50)
    assert red[:, :150].any() and red[:, 600:].any() and red.sum() > 7 * 140 * 90  # every red image placed
    assert (sheet[200:, 300:450].max(axis=2) == 0).sum() > 140 * 85  # and the black one: eighth, second row

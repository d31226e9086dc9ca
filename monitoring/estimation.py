"""Performance before outcomes: the champion's ROC AUC on the current window estimated from its own
probabilities, before any like comes back (confidence-based performance estimation, NannyML's CBPE).

A calibrated score ``p`` is the chance its post turns out popular, so each served post counts as a
positive with weight ``p`` and a negative with weight ``1 - p``: the expected true and false positives
above every threshold give an expected ROC curve, whose area is, in closed form, the expected share
of (positive, negative) pairs the scores order rightly (:func:`expected_auc`). Drawing the labels
from the scores many times gives the spread the realized AUC would have if the scores were
calibrated (:func:`sampled_auc`), the estimate's interval.

It holds while the labels follow the scores: under input drift (other photos, the same taste) the
estimate follows the realized AUC; when the taste changes, the scores still look as sure as ever and
the estimate stays where it was while the realized AUC falls. Only outcomes can show concept shift,
which is why the realized figure and decay stay the verdict and the estimate is an early warning.

Median-based label schemes make half of every window popular by construction (the window's own
median), so the scores are first shifted on the logit scale until their mean is that share
(:func:`recentre`): a window of brighter photos that all score higher does not look easier.
Calibration is checked on the champion's own held-out test split, which its version records:
the CBPE estimate of its test AUC from the stored reference scores against the test AUC it measured,
and, for schemes with an absolute threshold, the mean score against the test base rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

# Label schemes whose positives are the top half of whatever rows they label (pipelines/data/labels.py).
HALF_POSITIVE_SCHEMES = frozenset({"median-split", "score", "likes", "deciles"})
# The test split's CBPE estimate may differ this much from its measured AUC (or the mean score from its
# base rate) before the estimate is reported as resting on scores that are not calibrated.
CALIBRATION_TOLERANCE = 0.05
DRAWS = 500


def expected_auc(p: np.ndarray, score: np.ndarray | None = None) -> float:
    """E[#rightly ordered pairs] / E[#pairs] with labels drawn independently from ``p`` (pairs of distinct
    posts; ties in ``score`` count half): the area under the expected ROC curve."""
    p = np.clip(np.asarray(p, dtype=float), 0, 1)
    score = p if score is None else np.asarray(score, dtype=float)
    if len(p) < 2:
        return float("nan")
    q = 1 - p
    pairs = p.sum() * q.sum() - (p * q).sum()
    if pairs <= 0:
        return float("nan")
    levels, which = np.unique(score, return_inverse=True)
    tied = np.bincount(which, weights=q, minlength=len(levels))  # negatives' weight per distinct score
    below = np.concatenate([[0.0], np.cumsum(tied)[:-1]])  # negatives' weight strictly below each score
    ordered = p * (below[which] + 0.5 * (tied[which] - q))  # a post is never paired with itself
    return float(ordered.sum() / pairs)


def sampled_auc(p: np.ndarray, score: np.ndarray | None = None, draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """The ROC AUC of ``draws`` label sets drawn from ``p`` (draws with one class only left out)."""
    p = np.clip(np.asarray(p, dtype=float), 0, 1)
    ranks = rankdata(p if score is None else score)
    labels = np.random.default_rng(seed).random((draws, len(p))) < p
    n_pos = labels.sum(axis=1)
    n_neg = len(p) - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    rank_sum = labels[ok].astype(float) @ ranks
    return (rank_sum - n_pos[ok] * (n_pos[ok] + 1) / 2) / (n_pos[ok] * n_neg[ok])


def recentre(p: np.ndarray, share: float) -> np.ndarray:
    """``p`` shifted on the logit scale until its mean is ``share`` (the ordering is unchanged)."""
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if np.mean(1 / (1 + np.exp(-(logit + mid)))) < share else (low, mid)
    return 1 / (1 + np.exp(-(logit + (low + high) / 2)))


def probabilities(score: np.ndarray, scheme: str | None) -> np.ndarray:
    """The chance each served post is labelled popular under ``scheme`` in its window."""
    score = np.clip(np.asarray(score, dtype=float), 0, 1)
    return recentre(score, 0.5) if scheme in HALF_POSITIVE_SCHEMES and len(score) else score


def interval(p: np.ndarray, confidence: float, seed: int = 0) -> tuple[float, float]:
    values = sampled_auc(p, draws=DRAWS, seed=seed)
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def calibration_check(reference_scores: np.ndarray, test_metrics: dict, scheme: str | None = None) -> dict:
    """How far the champion's held-out test split says its scores are from calibrated: the CBPE estimate
    of the test AUC (from the stored test scores) against the AUC measured there, and the mean score
    against the base rate; ``calibrated`` when both are within :data:`CALIBRATION_TOLERANCE`. For a
    half-positive ``scheme`` the estimate recentres every window, so the test scores are recentred to the
    test base rate first and only the AUC is compared (the mean is reported)."""
    scores = np.clip(np.asarray(reference_scores, dtype=float), 0, 1)
    measured, base_rate = test_metrics.get("roc_auc"), test_metrics.get("base_rate")
    if not len(scores) or measured is None or base_rate is None:
        return {"checked": False, "calibrated": None, "test_estimate": None, "test_auc": measured,
                "mean_score": None, "base_rate": base_rate}
    recentred = scheme in HALF_POSITIVE_SCHEMES
    estimate = expected_auc(recentre(scores, base_rate) if recentred else scores, scores)
    mean = float(scores.mean())
    calibrated = abs(estimate - measured) <= CALIBRATION_TOLERANCE and (
        recentred or abs(mean - base_rate) <= CALIBRATION_TOLERANCE)
    return {"checked": True, "calibrated": bool(calibrated), "test_estimate": estimate, "test_auc": float(measured),
            "mean_score": mean, "base_rate": float(base_rate)}


@dataclass
class EstimateResult:
    version: str | None
    metric: str = "roc_auc"
    requests: int = 0  # the current window: the champion's newest served predictions
    value: float = float("nan")
    low: float = float("nan")  # the realized AUC's spread if the labels follow the scores
    high: float = float("nan")
    judged_estimate: float = float("nan")  # the estimate on the predictions the realized figure judged
    realized: float = float("nan")
    error: float = float("nan")  # judged_estimate − realized
    calibrated: bool | None = None  # None: not checked (the version records no test AUC or reference)
    calibration: dict | None = None
    enough_data: bool = False
    message: str = ""

    def summary(self) -> dict:
        plain = asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in plain.items()}


def estimate(served: np.ndarray, scheme: str | None, version: str | None, min_requests: int, confidence: float,
             calibration: dict | None = None, judged: np.ndarray | None = None,
             realized: float = float("nan")) -> EstimateResult:
    """The CBPE estimate of the window ``served`` (the champion's probabilities, oldest first) with its
    interval; with ``judged`` (the scores of the predictions whose outcomes gave ``realized``), the
    estimate on those very predictions beside the realized AUC."""
    result = EstimateResult(version=version, requests=len(served), calibration=calibration,
                            calibrated=None if calibration is None else calibration.get("calibrated"))
    if len(served) < min_requests:
        result.message = f"{len(served)} served predictions of v{version}, fewer than {min_requests}: no estimate"
        return result
    p = probabilities(served, scheme)
    result.value = expected_auc(p, served)
    result.low, result.high = interval(p, confidence)
    result.enough_data = bool(np.isfinite(result.value))
    if judged is not None and len(judged) >= 2:
        result.judged_estimate = expected_auc(probabilities(judged, scheme), judged)
        result.realized, result.error = realized, result.judged_estimate - realized
    result.message = (f"estimated roc_auc of v{version} before outcomes {result.value:.3f} "
                      f"[{result.low:.3f}, {result.high:.3f}] on its newest {len(served)} predictions")
    if np.isfinite(result.error):
        result.message += (f"; on the {len(judged)} predictions judged by outcomes, estimated "
                           f"{result.judged_estimate:.3f} against realized {realized:.3f}")
    if result.calibrated is None:
        result.message += " (assumes calibrated scores: the version records no test check)"
    elif not result.calibrated:
        c = calibration
        result.message += (f" (scores not calibrated on the test split: estimated {c['test_estimate']:.3f} against "
                           f"measured {c['test_auc']:.3f}, mean score {c['mean_score']:.3f} against base rate "
                           f"{c['base_rate']:.3f}; read the estimate as a trend only)")
    return result

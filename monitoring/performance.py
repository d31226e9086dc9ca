"""Realized performance: what a model version predicted against the engagement that came back.

The predictions of a window that have an outcome are labelled with the champion's own label scheme
(likes/followers above the median, the popularity score of the views, …) applied to that window alone,
so "popular" means above the window's median, not the whole history's, then scored:
realized ROC AUC (binary) or Spearman (score), calibration (Brier score and a reliability curve) and
the share of predictions with an outcome, each with a bootstrap interval. Decay is the metric's whole
interval lying more than ``performance.decay_margin`` below the champion's test metric: a model
whose inputs look as usual but whose predictions no longer match what happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata, spearmanr

from pipelines.data import labels
from pipelines.settings import PerformanceSettings
from pipelines.tasks import PRIMARY

CALIBRATION_BINS = 10
MIN_BUCKET_OUTCOMES = 10  # a point of the metric-over-time panel needs this many outcomes


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """The Mann–Whitney form: the chance a popular post outscores an unpopular one (ties count half)."""
    positive = label == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def spearman(score: np.ndarray, realized: np.ndarray) -> float:
    if len(score) < 3 or np.std(score) == 0 or np.std(realized) == 0:
        return float("nan")
    return float(spearmanr(score, realized).statistic)


def brier(score: np.ndarray, label: np.ndarray) -> float:
    return float(np.mean((score - label) ** 2)) if len(score) else float("nan")


def interval(statistic: Callable[[np.ndarray], float], n: int, resamples: int, confidence: float,
             seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of ``statistic(indexes)`` over ``n`` cases."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


EMPTY_OUTCOMES = ["prediction_id", "version", "ts", "predicted"]


def outcomes(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Predictions joined to their latest outcome, not yet labelled: ``predicted`` (the served score)
    beside the outcome's columns, oldest first."""
    if predictions.empty or feedback.empty or "prediction_id" not in predictions:
        return pd.DataFrame(columns=EMPTY_OUTCOMES)
    served = predictions.dropna(subset=["prediction_id"])[["prediction_id", "version", "ts", "score"]]
    joined = served.rename(columns={"score": "predicted"}).merge(
        feedback.drop(columns=["score", "label", "version", "ts"], errors="ignore"), on="prediction_id")
    return joined.sort_values("ts").reset_index(drop=True)


def realized(window: pd.DataFrame, scheme: str, task: str) -> pd.DataFrame:
    """``window``'s outcomes labelled by ``scheme`` on that window alone (a median-based label is above
    the window's own median), with ``realized``: the label, or the score for the score task."""
    if window.empty:
        return window.assign(realized=pd.Series(dtype=float))
    labelled, _ = labels.apply(scheme, window)
    target = "label" if task == "binary" else "score"
    return labelled.assign(realized=labelled[target].astype(float))


@dataclass
class PerformanceResult:
    version: str | None
    metric: str
    outcomes: int = 0
    predictions: int = 0
    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    share: float = float("nan")  # of the window's predictions, those with an outcome
    share_low: float = float("nan")
    share_high: float = float("nan")
    brier: float = float("nan")
    brier_low: float = float("nan")
    brier_high: float = float("nan")
    expected: float | None = None  # the champion's test metric
    enough_data: bool = False
    decay: bool = False
    message: str = ""
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    over_time: pd.DataFrame = field(default_factory=pd.DataFrame)
    judged: np.ndarray = field(default_factory=lambda: np.empty(0))  # the served scores the metric judged
    estimate: dict | None = None  # binary: the AUC estimated before outcomes (monitoring/estimation.py)
    shadow: dict | None = None  # the challenger in shadow against the champion (monitoring/shadow.py)

    def summary(self) -> dict:
        plain = {k: v for k, v in asdict(self).items() if k not in ("calibration", "over_time", "judged")}
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in plain.items()}


def _metric(task: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return roc_auc if task == "binary" else spearman


def over_time(frame: pd.DataFrame, scheme: str, task: str, settings: PerformanceSettings) -> pd.DataFrame:
    """The metric per version and ``bucket_hours`` of prediction time, each bucket labelled on its own
    outcomes, with its interval."""
    if frame.empty:
        return pd.DataFrame(columns=["version", "start", "outcomes", "value", "low", "high"])
    metric, rows = _metric(task), []
    bucket = (frame["ts"] // (settings.bucket_hours * 3600)) * settings.bucket_hours * 3600
    for (version, start), part in frame.groupby([frame["version"].astype(str), bucket]):
        part = realized(part, scheme, task)
        if len(part) < MIN_BUCKET_OUTCOMES:
            continue
        p, r = part["predicted"].to_numpy(float), part["realized"].to_numpy(float)
        low, high = interval(lambda i, p=p, r=r: metric(p[i], r[i]), len(part), settings.bootstrap // 2,
                             settings.confidence)
        rows.append({"version": version, "start": pd.Timestamp(start, unit="s", tz="UTC"), "outcomes": len(part),
                     "value": metric(p, r), "low": low, "high": high})
    return pd.DataFrame(rows, columns=["version", "start", "outcomes", "value", "low", "high"])


def calibration(predicted: np.ndarray, realized: np.ndarray) -> pd.DataFrame:
    """The reliability curve: mean predicted probability against the share popular, per score bin."""
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    rows = [{"bin": b, "predicted": float(predicted[which == b].mean()), "observed": float(realized[which == b].mean()),
             "count": int((which == b).sum())} for b in range(CALIBRATION_BINS) if (which == b).any()]
    return pd.DataFrame(rows, columns=["bin", "predicted", "observed", "count"])


def evaluate(predictions: pd.DataFrame, feedback: pd.DataFrame, champion: dict, task: str,
             settings: PerformanceSettings) -> PerformanceResult:
    """The champion version's realized performance over its newest ``window`` outcomes, and the verdict."""
    version, primary = str(champion["version"]), PRIMARY[task]
    expected = champion.get("metrics", {}).get(primary)
    result = PerformanceResult(version=version, metric=primary, expected=expected)
    scheme = champion.get("label")
    if not scheme:
        result.message = f"v{version} records no label scheme (registered before outcomes were monitored); no decision"
        return result
    everything = outcomes(predictions, feedback)
    result.over_time = over_time(everything, scheme, task, settings)
    mine = realized(everything[everything["version"].astype(str) == version].tail(settings.window), scheme, task)
    result.outcomes = len(mine)
    if len(mine) < settings.min_outcomes:
        result.message = (f"{len(mine)} predictions of v{version} have an outcome, fewer than "
                          f"{settings.min_outcomes}: no decision")
        return result
    served = predictions[predictions["version"].astype(str) == version]
    span = served[(served["ts"] >= mine["ts"].min()) & (served["ts"] <= mine["ts"].max())]
    answered = span["prediction_id"].isin(set(feedback["prediction_id"])).to_numpy(float)
    result.predictions = len(span)
    p, r = mine["predicted"].to_numpy(float), mine["realized"].to_numpy(float)
    result.judged = p
    metric, s = _metric(task), settings
    result.value = metric(p, r)
    result.low, result.high = interval(lambda i: metric(p[i], r[i]), len(p), s.bootstrap, s.confidence)
    result.share = float(answered.mean())
    result.share_low, result.share_high = interval(lambda i: answered[i].mean(), len(answered), s.bootstrap,
                                                   s.confidence)
    if task == "binary":
        result.brier = brier(p, r)
        result.brier_low, result.brier_high = interval(lambda i: brier(p[i], r[i]), len(p), s.bootstrap,
                                                       s.confidence)
        result.calibration = calibration(p, r)
    result.enough_data = bool(np.isfinite(result.high))
    floor = expected - s.decay_margin if expected is not None else None
    result.decay = bool(result.enough_data and floor is not None and result.high < floor)
    verdict = "decay" if result.decay else "no decay"
    against = f" (floor {floor:.3f}: test {expected:.3f} − margin {s.decay_margin})" if floor is not None else ""
    result.message = (f"{verdict}: realized {primary} of v{version} {result.value:.3f} "
                      f"[{result.low:.3f}, {result.high:.3f}] on {len(mine)} outcomes{against}; "
                      f"{result.share:.0%} of its predictions have an outcome")
    return result

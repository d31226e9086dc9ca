"""Drift statistics: the served requests' monitored features against the champion's reference.

The monitored features are ``pipelines.features.profile``'s. Each scalar feature gets a two-sample
Kolmogorov–Smirnov test (plus PSI and the Wasserstein distance for the report); the embedding's
PCA projection is tested as one multivariate feature by the maximum mean discrepancy (an RBF
kernel, permutation p-value), which sees a shift of the joint distribution that no single
component shows. The window drifts when the share of drifted features crosses the threshold, which
is applied here, in :func:`check_drift`. We compute these with SciPy rather than Evidently because
Evidently 0.7 does not import beside pandas 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from pipelines.features.monitored import PROJECTION_PREFIX, SCALARS

MONITORED = [*SCALARS, "score"]
EMBEDDING = "embedding"


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 3:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference, edges)[0] / len(reference) + 1e-4
    cur = np.histogram(current, edges)[0] / len(current) + 1e-4
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def projection_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(PROJECTION_PREFIX) and c[len(PROJECTION_PREFIX):].isdigit()]


def mmd(reference: np.ndarray, current: np.ndarray, permutations: int, seed: int = 0) -> tuple[float, float]:
    """Squared maximum mean discrepancy (RBF kernel, median-distance bandwidth) and its permutation p-value."""
    pooled = np.vstack([reference, current])
    norms = (pooled * pooled).sum(1)
    distances = np.clip(norms[:, None] + norms[None, :] - 2 * pooled @ pooled.T, 0, None)
    positive = distances[distances > 0]
    kernel = np.exp(-distances / (np.median(positive) if len(positive) else 1.0))
    n = len(reference)

    def statistic(order: np.ndarray) -> float:
        a, b = order[:n], order[n:]
        return kernel[np.ix_(a, a)].mean() + kernel[np.ix_(b, b)].mean() - 2 * kernel[np.ix_(a, b)].mean()

    observed = statistic(np.arange(len(pooled)))
    rng = np.random.default_rng(seed)
    null = np.array([statistic(rng.permutation(len(pooled))) for _ in range(permutations)])
    return float(observed), float((1 + np.sum(null >= observed)) / (1 + permutations))


@dataclass
class DriftResult:
    window: int
    features: pd.DataFrame = field(default_factory=pd.DataFrame)
    drifted_share: float = 0.0
    drift: bool = False
    enough_data: bool = True
    message: str = ""

    def summary(self) -> dict:
        return {
            "window": self.window,
            "drifted_share": round(self.drifted_share, 4),
            "drift": self.drift,
            "enough_data": self.enough_data,
            "features": self.features.to_dict(orient="records") if len(self.features) else [],
            "message": self.message,
        }


def check_drift(reference: pd.DataFrame, current: pd.DataFrame, p_value: float, threshold: float,
                min_requests: int, permutations: int = 200) -> DriftResult:
    if len(current) < min_requests:
        return DriftResult(window=len(current), enough_data=False,
                           message=f"only {len(current)} requests in the window (need {min_requests}); no decision")
    rows = []
    for name in [c for c in MONITORED if c in reference and c in current]:
        ref, cur = reference[name].dropna().to_numpy(float), current[name].dropna().to_numpy(float)
        test = stats.ks_2samp(ref, cur)
        rows.append({"feature": name, "test": "KS", "statistic": float(test.statistic), "p_value": float(test.pvalue),
                     "psi": psi(ref, cur), "wasserstein": float(stats.wasserstein_distance(ref, cur)),
                     "drifted": bool(test.pvalue < p_value)})
    projection = [c for c in projection_columns(reference) if c in current]
    if projection:
        ref, cur = reference[projection].dropna().to_numpy(float), current[projection].dropna().to_numpy(float)
        statistic, p = mmd(ref, cur, permutations)
        rows.append({"feature": EMBEDDING, "test": "MMD", "statistic": statistic, "p_value": p, "psi": np.nan,
                     "wasserstein": np.nan, "drifted": bool(p < p_value)})
    table = pd.DataFrame(rows)
    share = float(table["drifted"].mean()) if len(table) else 0.0
    drift = share >= threshold
    drifted = ", ".join(table.loc[table["drifted"], "feature"]) or "none"
    return DriftResult(window=len(current), features=table, drifted_share=share, drift=drift,
                       message=f"{'drift' if drift else 'no drift'}: {share:.0%} of features drifted ({drifted})")

"""Drift monitoring: the served requests' features against the champion's training reference.

The monitored features are ``pipelines.features.profile``'s. Each scalar feature gets a two-sample
Kolmogorov–Smirnov test (plus PSI and the Wasserstein distance for the report); the embedding's
PCA projection is tested as one multivariate feature by the maximum mean discrepancy (an RBF
kernel, permutation p-value), which sees a shift of the joint distribution that no single
component shows. The window drifts when the share of drifted features crosses the threshold. We
compute these with SciPy rather than Evidently because Evidently 0.7 does not import beside
pandas 3. A drift verdict may start retraining, at most once per cooldown (see ``Cooldown``).
"""

from __future__ import annotations

import fcntl
import html
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import mlflow  # noqa: E402
from scipy import stats  # noqa: E402

from pipelines import registry, tracking  # noqa: E402
from pipelines.features.profile import PROJECTION_PREFIX, SCALARS  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from serving.request_log import RequestLog  # noqa: E402

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


def write_report(result: DriftResult, reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> Path:
    """An HTML page with the verdict, the per-feature table and reference-vs-current histograms."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(result.features["feature"]) if len(result.features) else []
    if names:
        rows, columns = -(-len(names) // 4), 4
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names):
            if name == EMBEDDING:
                first, second = f"{PROJECTION_PREFIX}1", f"{PROJECTION_PREFIX}2"
                for frame, label in ((reference, "reference"), (current, "current")):
                    ax.scatter(frame[first], frame[second], s=4, alpha=0.5, label=label)
                ax.set_title("embedding: pc1 × pc2 (MMD)", fontsize=9)
                continue
            ax.hist(reference[name].dropna(), bins=30, alpha=0.5, density=True, label="reference")
            ax.hist(current[name].dropna(), bins=30, alpha=0.5, density=True, label="current")
            ax.set_title(name, fontsize=9)
        for ax in list(axes.flat)[len(names):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "drift.png", dpi=80)
        plt.close(fig)
    table = result.features.to_html(index=False, float_format="%.4f") if len(result.features) else ""
    page = (f"<html><head><title>Drift report</title></head><body><h1>Drift report</h1>"
            f"<p><b>{html.escape(result.message)}</b> (window: {result.window} requests)</p>{table}"
            + ('<img src="drift.png" alt="feature distributions">' if names else "") + "</body></html>")
    path = out / "drift_report.html"
    path.write_text(page)
    return path


def reference_profile(champion: dict) -> pd.DataFrame:
    """The monitored features and scores of the champion's test split, stored with its training run."""
    return pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=champion["run_id"], artifact_path="reference/profile.parquet"))


class Cooldown:
    """One drift episode starts one retraining: a claim blocks further claims for ``hours``.

    Checking and claiming happen under one file lock, so overlapping monitor runs cannot both claim.
    """

    def __init__(self, path: Path, hours: float):
        self.path, self.hours = path, hours
        path.parent.mkdir(parents=True, exist_ok=True)

    def claim(self, reason: str) -> tuple[bool, str]:
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = time.time()
            if self.path.exists():
                last = json.loads(self.path.read_text())
                until = last["at"] + self.hours * 3600
                if now < until:
                    return False, (f"retraining already started at {_iso(last['at'])}; "
                                   f"cooldown until {_iso(until)}")
            self.path.write_text(json.dumps({"at": now, "reason": reason}))
            return True, f"retraining started at {_iso(now)}: {reason}"

    def release(self) -> None:
        """Give the claim back when retraining could not even be started."""
        self.path.unlink(missing_ok=True)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def run(task: str, settings: Settings) -> tuple[DriftResult, Path | None]:
    """Check the latest window against the champion's reference; report under the home and in MLflow."""
    try:
        champion = registry.champion_summary(task, settings)
    except LookupError as exc:
        return DriftResult(window=0, enough_data=False, message=f"{exc}; no decision"), None
    reference = reference_profile(champion)
    d = settings.drift
    served = RequestLog(settings.monitoring_dir / "requests", d.log_max_bytes, d.log_backups).read()
    if "version" in served:  # the projection is the champion's own: compare only the requests it answered
        served = served[served["version"].astype(str) == str(champion["version"])]
    current = served.tail(d.window).reset_index(drop=True)
    result = check_drift(reference, current, d.p_value, d.drifted_share_threshold, d.min_requests,
                         d.mmd_permutations)
    if not result.enough_data:
        return result, None
    out = settings.monitoring_dir / "reports" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    report = write_report(result, reference, current, out)
    (settings.monitoring_dir / "latest.json").write_text(json.dumps(result.summary(), indent=2))
    with mlflow.start_run(experiment_id=tracking.experiment(settings, "monitoring"), run_name="drift-check"):
        mlflow.set_tags({"model": champion["name"], "version": champion["version"]})
        per_feature = {f"{row.feature}_{name}": float(getattr(row, name))
                       for row in result.features.itertuples() for name in ("statistic", "p_value")}
        mlflow.log_metrics({"drifted_share": result.drifted_share, "drift": float(result.drift),
                            "window": result.window, **per_feature})
        mlflow.log_artifacts(str(out), "report")
    return result, report

"""The service's own Prometheus series, beside BentoML's: predictions, scores, rejections, drift.

``prometheus_client`` is imported when :class:`ServiceMetrics` is built, inside the worker: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and series created before that
would never reach ``/metrics``. The drift gauge is read from the monitor's verdict file at scrape
time, so it is current without a background task and never double-counted across workers.
"""

from __future__ import annotations

import json
from pathlib import Path

SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServiceMetrics:
    def __init__(self, drift_file: Path):
        from prometheus_client import Counter, Histogram

        self.drift_file = drift_file
        self.predictions = Counter("popularity_predictions", "Predictions served, by label and model version",
                                   ["label", "version"])
        self.scores = Histogram("popularity_score", "Distribution of served scores", buckets=SCORE_BUCKETS)
        self.rejected = Counter("popularity_rejected_inputs", "Inputs refused with a 4xx, by reason", ["reason"])

    def observe(self, score: float, label: int, version: str) -> None:
        self.predictions.labels(label=str(label), version=version).inc()
        self.scores.observe(score)

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    def drift_lines(self) -> str:
        """Exposition text of the drift gauges; NaN until the monitor has written a verdict."""
        try:
            verdict = json.loads(self.drift_file.read_text())
            share, drift = float(verdict["drifted_share"]), float(bool(verdict["drift"]))
        except (OSError, ValueError, KeyError, TypeError):
            share = drift = float("nan")
        return (
            "# HELP popularity_drifted_share Share of monitored features that drifted in the last window\n"
            "# TYPE popularity_drifted_share gauge\n"
            f"popularity_drifted_share {share}\n"
            "# HELP popularity_drift 1 when the monitor's last verdict was drift\n"
            "# TYPE popularity_drift gauge\n"
            f"popularity_drift {drift}\n"
        )

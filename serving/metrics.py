"""The service's own Prometheus series, beside BentoML's: predictions, scores, rejections, drift and
realized performance.

``prometheus_client`` is imported when :class:`ServiceMetrics` is built, inside the worker: BentoML sets
``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and series created before that
would never reach ``/metrics``. The drift, realized-performance and estimate gauges show the monitor's
latest verdicts as the service last read them from the store (:class:`monitoring.verdicts.VerdictCache`),
wherever the monitor ran: written at scrape time, never double-counted across workers, NaN while
there is no verdict or the store cannot be read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.readiness import ServingStatus

SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


class ServiceMetrics:
    def __init__(self):
        from prometheus_client import Counter, Histogram

        self.predictions = Counter("popularity_predictions", "Predictions served, by label and model version",
                                   ["label", "version"])
        self.scores = Histogram("popularity_score", "Distribution of served scores", buckets=SCORE_BUCKETS)
        self.rejected = Counter("popularity_rejected_inputs", "Inputs refused with a 4xx, by reason", ["reason"])

    def observe(self, score: float, label: int, version: str) -> None:
        self.predictions.labels(label=str(label), version=version).inc()
        self.scores.observe(score)

    def reject(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()

    @staticmethod
    def drift_lines(verdict: dict | None) -> str:
        """Exposition text of the drift gauges; NaN until the monitor has a verdict."""
        try:
            share, drift = float(verdict["drifted_share"]), float(bool(verdict["drift"]))
        except (ValueError, KeyError, TypeError):
            share = drift = float("nan")
        return (
            "# HELP popularity_drifted_share Share of monitored features that drifted in the last window\n"
            "# TYPE popularity_drifted_share gauge\n"
            f"popularity_drifted_share {share}\n"
            "# HELP popularity_drift 1 when the monitor's last verdict was drift\n"
            "# TYPE popularity_drift gauge\n"
            f"popularity_drift {drift}\n"
        )

    @staticmethod
    def performance_lines(check: dict | None, estimate: dict | None = None) -> str:
        """Exposition text of the realized-performance gauges from the monitor's last check that had
        enough outcomes, and of the estimate before outcomes; NaN until there is one."""
        try:
            version, metric = str(check["version"]), str(check["metric"])
            values = [float(check[k] if check[k] is not None else "nan") for k in ("value", "low", "high", "share")]
            decay = float(bool(check["decay"]))
        except (ValueError, KeyError, TypeError):
            version, metric, values, decay = "", "", [float("nan")] * 4, float("nan")
        labels = f'{{version="{version}",metric="{metric}"}}'
        value, low, high, share = values
        return (
            "# HELP popularity_realized_metric The champion's realized metric on outcomes that came back\n"
            "# TYPE popularity_realized_metric gauge\n"
            f"popularity_realized_metric{labels} {value}\n"
            "# HELP popularity_realized_metric_low Lower bound of its bootstrap interval\n"
            "# TYPE popularity_realized_metric_low gauge\n"
            f"popularity_realized_metric_low{labels} {low}\n"
            "# HELP popularity_realized_metric_high Upper bound of its bootstrap interval\n"
            "# TYPE popularity_realized_metric_high gauge\n"
            f"popularity_realized_metric_high{labels} {high}\n"
            "# HELP popularity_outcome_share Share of the window's predictions with an outcome\n"
            "# TYPE popularity_outcome_share gauge\n"
            f"popularity_outcome_share{labels} {share}\n"
            "# HELP popularity_decay 1 when the monitor's last verdict was decay\n"
            "# TYPE popularity_decay gauge\n"
            f"popularity_decay {decay}\n"
            + ServiceMetrics._estimate_lines(estimate)
        )

    @staticmethod
    def _estimate_lines(estimate: dict | None) -> str:
        """The binary champion's ROC AUC estimated from its scores before outcomes come back."""
        try:
            version = str(estimate["version"])
            value, low, high = (float(estimate[k] if estimate[k] is not None else "nan") for k in ("value", "low", "high"))
        except (ValueError, KeyError, TypeError):
            version, value, low, high = "", float("nan"), float("nan"), float("nan")
        labels = f'{{version="{version}",metric="roc_auc"}}'
        return (
            "# HELP popularity_estimated_metric The champion's metric estimated from its scores, before outcomes\n"
            "# TYPE popularity_estimated_metric gauge\n"
            f"popularity_estimated_metric{labels} {value}\n"
            "# HELP popularity_estimated_metric_low Lower bound of the estimate's interval\n"
            "# TYPE popularity_estimated_metric_low gauge\n"
            f"popularity_estimated_metric_low{labels} {low}\n"
            "# HELP popularity_estimated_metric_high Upper bound of the estimate's interval\n"
            "# TYPE popularity_estimated_metric_high gauge\n"
            f"popularity_estimated_metric_high{labels} {high}\n"
        )

    @staticmethod
    def model_lines(status: ServingStatus, records_dropped: int) -> str:
        """Which champion this replica serves, whether a newer one failed to load, and monitoring records lost."""
        version = f'popularity_model_version{{version="{status.version}"}} 1\n' if status.version else ""
        return (
            "# HELP popularity_model_ready 1 when a champion is loaded\n"
            "# TYPE popularity_model_ready gauge\n"
            f"popularity_model_ready {float(status.ready)}\n"
            "# HELP popularity_model_version The champion version being served\n"
            "# TYPE popularity_model_version gauge\n"
            + version
            + "# HELP popularity_model_problem 1 while the champion cannot be followed (see /readyz)\n"
            "# TYPE popularity_model_problem gauge\n"
            f"popularity_model_problem {float(status.problem is not None)}\n"
            "# HELP popularity_model_promoted_without_gate 1 while the champion served holds the alias without the "
            "gate's record (moved by hand, e.g. MLflow's own Promote button; see /model)\n"
            "# TYPE popularity_model_promoted_without_gate gauge\n"
            f"popularity_model_promoted_without_gate {float(status.gate_warning is not None)}\n"
            "# HELP popularity_model_load_failures_total Champions that failed to load; the old one kept serving\n"
            "# TYPE popularity_model_load_failures_total counter\n"
            f"popularity_model_load_failures_total {status.load_failures}\n"
            "# HELP popularity_request_records_dropped_total Request records the store did not take\n"
            "# TYPE popularity_request_records_dropped_total counter\n"
            f"popularity_request_records_dropped_total {records_dropped}\n"
        )

    @staticmethod
    def shadow_lines(status: ServingStatus, skipped: int) -> str:
        """Shadow scoring: the challenger held, whether it cannot load or score, and its failures."""
        version = f'popularity_shadow_version{{version="{status.shadow_version}"}} 1\n' if status.shadow_version else ""
        return (
            "# HELP popularity_shadow_version The challenger version scoring in shadow\n"
            "# TYPE popularity_shadow_version gauge\n"
            + version
            + "# HELP popularity_shadow_problem 1 while the shadow challenger cannot load or score (see /readyz)\n"
            "# TYPE popularity_shadow_problem gauge\n"
            f"popularity_shadow_problem {float(status.shadow_problem is not None)}\n"
            "# HELP popularity_shadow_failures_total Shadow loads and scoring calls that failed\n"
            "# TYPE popularity_shadow_failures_total counter\n"
            f"popularity_shadow_failures_total {status.shadow_failures}\n"
            "# HELP popularity_shadow_skipped_total Requests drawn for shadow scoring but not shadowed (too many in flight)\n"
            "# TYPE popularity_shadow_skipped_total counter\n"
            f"popularity_shadow_skipped_total {skipped}\n"
        )

"""The monitoring report: an HTML page with input drift (verdict, per-feature table, reference-vs-current
plots) and realized performance (metric over time, calibration curve)."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from monitoring.drift import EMBEDDING, DriftResult  # noqa: E402
from monitoring.performance import PerformanceResult  # noqa: E402
from pipelines.features.monitored import PROJECTION_PREFIX  # noqa: E402


def _drift_section(result: DriftResult, reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> str:
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
    return (f"<h2>Input drift</h2><p><b>{html.escape(result.message)}</b> (window: {result.window} requests)</p>"
            f"{table}" + ('<img src="drift.png" alt="feature distributions">' if names else ""))


def _performance_section(result: PerformanceResult, margin: float, out: Path) -> str:
    """The realized metric over time per version (with its interval, the champion's test metric and the
    decay floor) and the calibration curve."""
    fig, (trend, reliability) = plt.subplots(1, 2, figsize=(11, 3.6))
    for version, part in result.over_time.groupby("version"):
        trend.plot(part["start"], part["value"], marker="o", label=f"v{version}")
        trend.fill_between(part["start"], part["low"], part["high"], alpha=0.2)
    if result.expected is not None:
        trend.axhline(result.expected, color="grey", linestyle="--", label="test metric")
        trend.axhline(result.expected - margin, color="red", linestyle=":", label="decay floor")
    trend.set_title(f"realized {result.metric} over time", fontsize=9)
    trend.legend(fontsize=7)
    trend.tick_params(axis="x", labelsize=7, rotation=30)
    if len(result.calibration):
        reliability.plot([0, 1], [0, 1], color="grey", linestyle="--")
        reliability.plot(result.calibration["predicted"], result.calibration["observed"], marker="o")
        reliability.set_xlabel("predicted probability", fontsize=8)
        reliability.set_ylabel("share popular", fontsize=8)
        reliability.set_title(f"calibration (Brier {result.brier:.3f})", fontsize=9)
    else:
        reliability.axis("off")
    fig.tight_layout()
    fig.savefig(out / "performance.png", dpi=80)
    plt.close(fig)
    table = result.over_time.to_html(index=False, float_format="%.3f") if len(result.over_time) else ""
    return (f"<h2>Realized performance</h2><p><b>{html.escape(result.message)}</b></p>"
            f'<img src="performance.png" alt="realized metric over time and calibration">{table}')


def write_report(drift: DriftResult, reference: pd.DataFrame, current: pd.DataFrame, out: Path,
                 realized: PerformanceResult | None = None, margin: float = 0.0) -> Path:
    """One HTML page: input drift (verdict, per-feature table, reference-vs-current histograms) beside
    realized performance (metric over time, calibration), each where there was enough data."""
    out.mkdir(parents=True, exist_ok=True)
    sections = [_drift_section(drift, reference, current, out) if drift.enough_data
                else f"<h2>Input drift</h2><p>{html.escape(drift.message)}</p>"]
    if realized is not None:
        sections.append(_performance_section(realized, margin, out) if realized.enough_data
                        else f"<h2>Realized performance</h2><p>{html.escape(realized.message)}</p>")
        if realized.estimate:  # binary: the AUC estimated from the scores before outcomes (estimation.py)
            sections.append(f"<h2>Estimated before outcomes</h2><p>{html.escape(realized.estimate['message'])}</p>")
    page = "<html><head><title>Monitoring report</title></head><body><h1>Monitoring report</h1>" + "".join(sections)
    path = out / "drift_report.html"
    path.write_text(page + "</body></html>")
    return path

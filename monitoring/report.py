"""The drift report: an HTML page with the verdict, the per-feature table and reference-vs-current plots."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from monitoring.drift import EMBEDDING, DriftResult  # noqa: E402
from pipelines.features.monitored import PROJECTION_PREFIX  # noqa: E402


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

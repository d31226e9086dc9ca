"""The primary metric of every registered version of a task's model, charted: validation and test beside the
baseline and the oracle each version was trained with, the champion marked. The gate logs the chart and the
series behind it (``versions/<metric>.png`` and ``.json``) on the parent run of the version it judged, so a
person reviewing that run sees where the new version stands among all that came before."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

COLUMNS = ("version", "candidate", "validation", "test", "baseline", "oracle", "gate", "champion")


def chart_path(metric: str) -> str:
    """Where the chart lies among the parent run's artifacts (its series: the same name, ``.json``)."""
    return f"versions/{metric}.png"


def _number(tags: dict, key: str, metric: str) -> float | None:
    try:
        value = (json.loads(tags.get(key) or "null") or {}).get(metric)
    except (ValueError, AttributeError):  # a tag a person edited by hand: no point rather than no chart
        return None
    return float(value) if isinstance(value, (int, float)) else None


def series(c: MlflowClient, name: str, metric: str, champion: str | None) -> pd.DataFrame:
    """One row per registered version of ``name``, oldest first: its ``metric`` on validation (where it was
    chosen) and test, the baseline's and the oracle's on test, its gate verdict and whether it is
    ``champion``. A figure a version did not record is missing (None), never made up."""
    rows = []
    for version in c.search_model_versions(f"name = '{name}'"):
        tags = version.tags or {}
        rows.append({"version": int(version.version), "candidate": tags.get("candidate"),
                     "validation": _number(tags, "selection", "value") if tags.get("selection") else None,
                     "test": _number(tags, "metrics", metric), "baseline": _number(tags, "baseline", metric),
                     "oracle": _number(tags, "oracle", metric), "gate": tags.get("gate"),
                     "champion": str(version.version) == str(champion)})
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.sort_values("version", ignore_index=True)


def plot(frame: pd.DataFrame, name: str, metric: str) -> bytes:
    """The chart as PNG bytes: a point per version and figure, lines between them, the champion ringed."""
    fig, ax = plt.subplots(figsize=(min(20.0, max(7.5, 0.6 * len(frame) + 4.5)), 4))
    styles = {"validation": ("o-", "tab:blue"), "test": ("s-", "tab:orange"),
              "baseline": ("v:", "tab:gray"), "oracle": ("^--", "tab:green")}
    for column, (style, color) in styles.items():
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.notna().any():
            ax.plot(frame["version"], values, style, color=color, label=f"{column} (test)"
                    if column in ("baseline", "oracle") else column)
    for _, row in frame[frame["champion"]].iterrows():
        y = row["test"] if row["test"] is not None and pd.notna(row["test"]) else row["validation"]
        if y is not None and pd.notna(y):
            ax.plot([row["version"]], [y], "o", markersize=16, markerfacecolor="none", markeredgecolor="crimson",
                    markeredgewidth=2, label="champion")
            ax.annotate(f"champion v{row['version']}", (row["version"], y), textcoords="offset points",
                        xytext=(0, 14), ha="center", color="crimson")
    refused = frame[frame["gate"] == "failed"]
    for version in refused["version"]:
        ax.axvspan(version - 0.3, version + 0.3, color="lightgray", alpha=0.5, lw=0)
    ax.set_xticks(frame["version"].tolist())
    ax.set_xticklabels([f"v{v}\n{c if isinstance(c, str) else ''}"
                        for v, c in zip(frame["version"], frame["candidate"], strict=True)],
                       fontsize=8)
    ax.set_xlabel("registered version (grey: refused by the gate)" if len(refused) else "registered version")
    ax.set_ylabel(metric)
    ax.set_title(f"{name}: {metric} across versions")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def log(c: MlflowClient, run_id: str, name: str, metric: str, champion: str | None) -> pd.DataFrame:
    """Chart every version of ``name`` on ``run_id`` (``versions/<metric>.png``) beside its series
    (``versions/<metric>.json``: the rows of :func:`series`); returns the series."""
    frame = series(c, name, metric, champion)
    records = json.loads(frame.to_json(orient="records"))  # NaN as null
    champion = None if champion is None else str(champion)
    c.log_dict(run_id, {"model": name, "metric": metric, "champion": champion, "versions": records},
               chart_path(metric).removesuffix(".png") + ".json")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / Path(chart_path(metric)).name
        png.write_bytes(plot(frame, name, metric))
        c.log_artifact(run_id, str(png), str(Path(chart_path(metric)).parent))
    return frame

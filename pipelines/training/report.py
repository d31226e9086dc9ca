"""The comparison of a training run's candidates: baseline, oracle, the table and the best candidate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
import numpy as np
import pandas as pd

from pipelines import evaluation
from pipelines.tasks import PRIMARY
from pipelines.training.data import TrainingData
from pipelines.training.runs import Candidate


def oracle_metrics(data: TrainingData) -> dict[str, float]:
    """The demo generator's best achievable scores on the test split; empty for real data."""
    path = data.snapshot.path / "oracle.parquet"
    if not path.exists():
        return {}
    oracle = pd.read_parquet(path).set_index("image_id")
    test = data.rows("test")
    latent = oracle.loc[test["image_id"], "expected_log_ratio"].to_numpy()
    primary = PRIMARY[data.task]
    return {primary: evaluation.task_metrics(data.task, data.y("test"), latent)[primary]}


def comparison_table(candidates: list[Candidate], base: dict[str, float], oracle: dict[str, float],
                     task: str = "binary") -> pd.DataFrame:
    """One row per candidate (family, what it reads) beside the baseline and the oracle."""
    primary = PRIMARY[task]
    rows = []
    for c in candidates:
        row = {"candidate": c.name, "family": c.family, "inputs": c.inputs, **c.metrics}
        if f"repeat_{primary}_mean" in c.metrics:
            row[f"{primary} repeats"] = (f"{c.metrics[f'repeat_{primary}_mean']:.3f} ± "
                                         f"{c.metrics[f'repeat_{primary}_std']:.3f}")
        rows.append(row)
    rows.append({"candidate": "majority/mean baseline", "family": "baseline", "inputs": "-", **base})
    if oracle:
        rows.append({"candidate": "oracle (demo generator)", "family": "oracle", "inputs": "-", **oracle})
    table = pd.DataFrame(rows)
    drop = [c for c in table if c.startswith("repeat_") or c in ("base_rate", "prototypes")]
    return table.drop(columns=drop)


@dataclass
class TrainReport:
    task: str
    snapshot: str
    parent_run_id: str
    candidates: list[Candidate]
    baseline: dict[str, float]
    oracle: dict[str, float]
    table: pd.DataFrame

    @property
    def best(self) -> Candidate:
        primary = PRIMARY[self.task]
        scored = [c for c in self.candidates if np.isfinite(c.metrics[primary])]
        if not scored:
            raise RuntimeError("no candidate produced a finite test metric")
        return max(scored, key=lambda c: c.metrics[primary])

    def summary(self) -> dict:
        return {"task": self.task, "snapshot": self.snapshot, "parent_run_id": self.parent_run_id,
                "best": asdict(self.best), "baseline": self.baseline, "oracle": self.oracle,
                "table": self.table.to_dict(orient="records")}


def summarise(data: TrainingData, candidates: list[Candidate], parent_run_id: str) -> TrainReport:
    """Baseline, oracle and the comparison table of all candidates, logged on the parent run."""
    base = evaluation.baseline(data.task, data.y("train"), data.y("test"))
    oracle = oracle_metrics(data)
    table = comparison_table(candidates, base, oracle, data.task)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"baseline_{k}": v for k, v in base.items()})
        mlflow.log_metrics({f"oracle_{k}": v for k, v in oracle.items()})
        mlflow.log_text(table.to_markdown(index=False, floatfmt=".3f"), "comparison.md")
        mlflow.log_text(table.to_html(index=False, float_format="%.3f"), "comparison.html")
    return TrainReport(data.task, data.snapshot.id, parent_run_id, candidates, base, oracle, table)

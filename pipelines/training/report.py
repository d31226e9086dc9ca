"""The comparison of a training run's candidates: baseline, oracle, the table and the chosen candidate.

Candidates are chosen on the validation split; the test split is scored once per candidate, for the
report, and never decides anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
import numpy as np
import pandas as pd

from pipelines import evaluation, tracking
from pipelines.data import labels
from pipelines.tasks import PRIMARY
from pipelines.training.data import TrainingData
from pipelines.training.runs import Candidate

#: The demo generator's latent behind each (label scheme, task) target: the best achievable ranking.
LATENT = {
    ("median-split", "binary"): "expected_log_ratio",  # likes / followers above its median
    ("median-split", "score"): "expected_score",  # seed 002's score of the views, beside that label
    ("score", "binary"): "expected_score",
    ("score", "score"): "expected_score",
    ("deciles", "binary"): "expected_log_views",
    ("deciles", "score"): "expected_log_views",
    ("likes", "binary"): "expected_log_likes",
    ("likes", "score"): "expected_log_likes",
    ("favorited", "binary"): "expected_log_favorites",
}


def oracle_latent(oracle: pd.DataFrame, manifest: pd.DataFrame, scheme: str | None, task: str) -> pd.Series | None:
    """The generator's latent for the snapshot's target, by image id; None where it has none."""
    column = LATENT.get((scheme or "median-split", task))
    if column is None:
        return None
    if column == "expected_score":  # the score divides the views by the days since posting, which are observed
        frame = manifest.set_index("image_id")[["posted_at"]].assign(
            views=np.exp(oracle.set_index("image_id")["expected_log_views"]))
        return labels.popularity_score(frame)
    return oracle.set_index("image_id")[column]


def oracle_metrics(data: TrainingData) -> dict[str, float]:
    """The demo generator's best achievable scores on the test split; empty for real data, and for a split
    the generator drew only in part (demo data plus feedback rows): a partial oracle compares nothing."""
    path = data.snapshot.path / "oracle.parquet"
    if not path.exists():
        return {}
    latent = oracle_latent(pd.read_parquet(path), data.snapshot.manifest, data.snapshot.meta.get("label"), data.task)
    if latent is None:
        return {}
    primary = PRIMARY[data.task]
    test = data.rows("test")["image_id"]
    if not test.isin(latent.index).all():
        return {}
    scores = latent.loc[test].to_numpy()
    return {primary: evaluation.task_metrics(data.task, data.y("test"), scores)[primary]}


def comparison_table(candidates: list[Candidate], base: dict[str, float], oracle: dict[str, float],
                     task: str = "binary") -> pd.DataFrame:
    """One row per candidate (family, what it reads), its validation and test metric, beside the
    baseline and the oracle (test split only)."""
    primary = PRIMARY[task]
    rows = []
    for c in candidates:
        row = {"candidate": c.name, "family": c.family, "inputs": c.inputs,
               f"val_{primary}": c.validation.get(primary, np.nan),
               f"val_{primary}_se": c.validation.get(f"{primary}_se", np.nan),
               **{f"test_{k}": v for k, v in c.metrics.items()}}
        if f"repeat_{primary}_mean" in c.metrics:
            row[f"{primary} repeats"] = (f"{c.metrics[f'repeat_{primary}_mean']:.3f} ± "
                                         f"{c.metrics[f'repeat_{primary}_std']:.3f}")
        rows.append(row)
    rows.append({"candidate": "majority/mean baseline", "family": "baseline", "inputs": "-",
                 **{f"test_{k}": v for k, v in base.items()}})
    if oracle:
        rows.append({"candidate": "oracle (demo generator)", "family": "oracle", "inputs": "-",
                     **{f"test_{k}": v for k, v in oracle.items()}})
    table = pd.DataFrame(rows)
    drop = [c for c in table if c.startswith("test_repeat_") or c in ("test_base_rate", "test_prototypes")]
    return table.drop(columns=drop)


def gate_objections(candidate: Candidate, task: str, promotion) -> list[str]:
    """What the promotion gate would refuse this candidate for, judged with the gate's own checks and thresholds:
    the floor on the validation metric, and flip and JPEG stability by :func:`evaluation.stability_verdicts` on
    the validation split, the very rows and rule the gate applies (so "stable" here is never "unstable" there)."""
    primary = PRIMARY[task]
    floor = promotion.floor_roc_auc if task == "binary" else promotion.floor_spearman
    value = candidate.validation.get(primary, np.nan)
    objections = [] if value >= floor else [f"validation {primary} {value:.3f} under the floor {floor:g}"]
    for _, measure, shift, limit, passed in evaluation.stability_verdicts(candidate.validation, promotion):
        if not passed:
            objections.append(f"{measure} {shift:.3f} over the gate's {limit:g}")
    return objections


@dataclass(frozen=True)
class Selection:
    """The chosen candidate and, for every candidate, why it won, lost or was skipped."""

    candidate: Candidate
    why: dict[str, str]


def select(candidates: list[Candidate], task: str, promotion) -> Selection:
    """The best validation metric among the candidates the gate would accept (:func:`gate_objections`);
    if it would accept none, the best validation metric of all, said so. The test split does not choose.

    Stability weighs as the gate weighs it, a pass or a refusal: a candidate a little less stable than
    another but within the gate's tolerances is not given up for it. Each loser's note gives its gap to
    the winner beside the winner's bootstrap standard error on validation, so a reader sees which gaps
    are noise."""
    primary = PRIMARY[task]
    scored = [c for c in candidates if np.isfinite(c.validation.get(primary, np.nan))]
    if not scored:
        raise RuntimeError(f"no candidate produced a finite validation {primary}")
    objections = {c.name: gate_objections(c, task, promotion) for c in scored}
    eligible = [c for c in scored if not objections[c.name]]
    chosen = max(eligible or scored, key=lambda c: c.validation[primary])
    best, se = chosen.validation[primary], chosen.validation.get(f"{primary}_se", np.nan)
    among = "among those the gate would accept" if eligible else "the gate would accept none"
    why = {c.name: "not scored: no finite validation metric" for c in candidates if c not in scored}
    for c in scored:
        if c is chosen:
            why[c.name] = f"chosen: best validation {primary} {best:.3f} ± {se:.3f} ({among})"
        elif eligible and objections[c.name]:
            why[c.name] = "skipped: " + "; ".join(objections[c.name])
        else:
            gap = best - c.validation[primary]
            why[c.name] = f"{gap:.3f} below the chosen on validation (whose s.e. is {se:.3f})"
    return Selection(chosen, why)


@dataclass
class TrainReport:
    task: str
    snapshot: str
    parent_run_id: str
    candidates: list[Candidate]
    baseline: dict[str, float]
    oracle: dict[str, float]
    table: pd.DataFrame
    rows: dict[str, int]
    choice: Selection
    label: str | None = None  # the snapshot's label scheme, which realized outcomes are labelled with too

    @property
    def best(self) -> Candidate:
        return self.choice.candidate

    @property
    def selection(self) -> dict:
        primary = PRIMARY[self.task]
        return {"split": "validation", "metric": primary, "value": self.best.validation[primary]}

    def summary(self) -> dict:
        return {"task": self.task, "snapshot": self.snapshot, "parent_run_id": self.parent_run_id,
                "best": asdict(self.best), "selection": self.selection, "baseline": self.baseline,
                "oracle": self.oracle, "rows": self.rows, "label": self.label, "table": self.table.to_dict(orient="records")}


def summarise(data: TrainingData, candidates: list[Candidate], parent_run_id: str) -> TrainReport:
    """Baseline, oracle and the comparison table of all candidates, logged on the parent run."""
    base = evaluation.baseline(data.task, data.y("train"), data.y("test"))
    oracle = oracle_metrics(data)
    choice = select(candidates, data.task, data.settings.promotion)
    table = comparison_table(candidates, base, oracle, data.task)
    table["selection"] = table["candidate"].map(choice.why)
    with tracking.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"baseline_{k}": v for k, v in base.items()})
        mlflow.log_metrics({f"oracle_{k}": v for k, v in oracle.items()})
        mlflow.log_metrics({f"rows_{k}": v for k, v in data.row_counts.items()})
        # the chosen candidate's metric on the parent too, under its children's names: one column in the runs table
        primary = PRIMARY[data.task]
        mlflow.log_metrics({f"val_{primary}": choice.candidate.validation.get(primary, np.nan),
                            f"test_{primary}": choice.candidate.metrics.get(primary, np.nan)})
        mlflow.set_tag("chosen", choice.candidate.name)
        mlflow.log_text(table.to_markdown(index=False, floatfmt=".3f"), "comparison.md")
        mlflow.log_text(table.to_html(index=False, float_format="%.3f"), "comparison.html")
    return TrainReport(data.task, data.snapshot.id, parent_run_id, candidates, base, oracle, table, data.row_counts,
                       choice, data.snapshot.meta.get("label"))

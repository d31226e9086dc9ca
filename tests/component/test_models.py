"""Each classical and sequence candidate trains on a tiny set and logs a loadable pyfunc."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from pipelines.models import sequences
from pipelines.training.candidates import CANDIDATES
from pipelines.training.runs import train_candidate
from tests.component.tiny import check_pyfunc

CLASSICAL = [n for n, c in CANDIDATES.items() if c.family in ("classical", "sequence")]


pytestmark = pytest.mark.usefixtures("tracking")


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.filterwarnings("error::sklearn.exceptions.FitFailedWarning")  # every grid point is scored, on small data too
def test_candidate_logs_a_loadable_pyfunc(binary, name):
    data, parent = binary
    candidate = train_candidate(name, data, parent, quick=True)
    assert np.isfinite(candidate.metrics["roc_auc"]) and 0 <= candidate.metrics["pairwise_accuracy"] <= 1
    check_pyfunc(candidate, data)
    run = mlflow.get_run(candidate.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["inputs"] == candidate.inputs
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(candidate.run_id, "evaluation")}
    assert {"evaluation/evaluation.png", "evaluation/top_25.png", "evaluation/bottom_25.png"} <= artifacts
    if name.startswith("seq-"):
        assert "evaluation/feature_spearman.csv" in artifacts and candidate.metrics["seq_trimmed_rmse"] > 0
    if name == "forest":
        assert "evaluation/feature_importances.csv" in artifacts
    if name == "nowcast":
        assert "evaluation/nowcast_by_day.csv" in artifacts
        assert {f"nowcast_spearman_d{k}" for k in range(8)} | {"nowcast_spearman_image"} <= set(candidate.metrics)


def test_the_nowcast_reads_only_its_early_days_and_gains_from_them():
    rng = np.random.default_rng(0)
    n = 600
    appeal = rng.normal(0, 1, n)
    growth = np.exp(rng.normal(0, 0.6, n))  # how fast a post gathers its views: seen only in the early days
    daily = np.cumsum(np.exp(appeal[:, None] + np.log(growth)[:, None] * (np.arange(30) < 7)), axis=1)
    x = pd.DataFrame({"appeal": appeal + rng.normal(0, 0.5, n),
                      **{f"views_d{d}": daily[:, d - 1] for d in range(1, 8)}})
    train, test = slice(0, 400), slice(400, None)
    truth = np.log1p(daily[test, -1])
    rho = {}
    for days in (0, 1, 3, 7):
        model = sequences.NowcastRegressor(days=days, max_iter=100).fit(x[train], daily[train])
        rho[days] = spearmanr(truth, model.predict(x[test])).statistic
    assert rho[0] < rho[1] - 0.1 and rho[7] > 0.9
    two_days = sequences.NowcastRegressor(days=2, max_iter=100).fit(x[train], daily[train])
    later_changed = x[test].assign(views_d3=0.0, views_d7=1e9)
    assert np.array_equal(two_days.predict(x[test]), two_days.predict(later_changed))


def test_scale_times_shape_reconstructs_sequences():
    rng = np.random.default_rng(0)
    shapes = np.stack([np.linspace(0.1, 1, 30), np.linspace(0.1, 1, 30) ** 3])
    which = rng.integers(0, 2, 60)
    scale = np.exp(rng.normal(5, 1, 60))
    x = np.column_stack([which + rng.normal(0, 0.05, 60), np.log(scale)])
    for method in ("kmeans", "meanshift"):
        model = sequences.ScaleShapeRegressor(method, clusters=2, bandwidth=0.53, C=10.0, trees=50).fit(
            x, scale[:, None] * shapes[which])
        assert len(model.prototypes_) == 2
        predicted = model.predict_sequence(x)
        assert sequences.sequence_metrics(scale[:, None] * shapes[which], predicted)["seq_median_rmse"] < 0.5

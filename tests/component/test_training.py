"""CNN heads, fair-comparison protocol (time split, repeats, tuning) and the comparison table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest

from pipelines import evaluation
from pipelines.training.candidates import CANDIDATES
from pipelines.training.data import TrainingData
from pipelines.training.report import comparison_table, gate_objections, summarise
from pipelines.training.runs import train_candidate
from pipelines.training.trainers import early_stopping_split
from pipelines.training.tuning import repeat_scores, score_fitted, tune, tuning_view
from tests.component.tiny import check_pyfunc, tiny_data

CNNS = [n for n, c in CANDIDATES.items() if c.family == "cnn"]


pytestmark = pytest.mark.usefixtures("tracking")


@pytest.mark.parametrize("name", CNNS)
def test_cnn_heads_log_a_loadable_pyfunc(binary, name):
    data, parent = binary
    candidate = train_candidate(name, data, parent, quick=True)
    check_pyfunc(candidate, data)
    history = mlflow.MlflowClient().get_metric_history(candidate.run_id, "held_out_loss")
    assert len(history) == 1 and np.isfinite(history[0].value)
    assert candidate.params["head"] == {"cnn-ordinal": "ordinal", "cnn-ranking": "ranking"}.get(name, "bce")
    assert candidate.params["pretrained"] == (name != "small-cnn")


def test_a_cnn_never_learns_from_the_validation_labels(binary):
    """A CNN picks its epoch and calibrates its output on users held out of the training split, never on
    the validation split where it is compared with the other candidates: flipping every validation label
    changes nothing it learns (it did when the epoch and Platt's fit were chosen on validation)."""
    data, _ = binary
    data = data.view()
    data.settings = data.settings.model_copy(deep=True)
    data.settings.train.early_stopping_min_rows = 5  # the tiny set holds 10 training rows out
    fit, stop = early_stopping_split(data)
    groups = data.groups("train")
    assert len(stop) and not set(groups[fit]) & set(groups[stop])  # whole users are held out
    manifest = data.manifest.copy()
    validation = manifest["split"] == "val"
    manifest.loc[validation, "label"] = 1 - manifest.loc[validation, "label"]
    scores = []
    data.settings.train.epochs = 3  # an epoch to choose
    for view in (data.view(), data.view(manifest)):
        with tempfile.TemporaryDirectory() as tmp:
            scores.append(score_fitted(CANDIDATES["cnn-ordinal"].fit(view, Path(tmp), False), view, "test"))
    assert (data.view(manifest).y("val") != data.y("val")).all()
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)


def test_regression_task_and_comparison_table(tmp_path):
    # boosting needs 20 rows a leaf: 100 images of 10 users can leave fewer than 40 to train on
    data, parent = tiny_data(tmp_path / "home", task="score", images=200)
    candidates = [train_candidate(n, data, parent, quick=True) for n in ("social-gb", "stats-gb")]
    report = summarise(data, candidates, parent)
    refused = {c.name: gate_objections(c, "score", data.settings.promotion) for c in candidates}
    accepted = [c for c in candidates if not refused[c.name]]
    chosen = max(accepted or candidates, key=lambda c: c.validation["spearman"])
    why = dict(zip(report.table["candidate"], report.table["selection"]))
    assert why[chosen.name].startswith("chosen: best validation spearman")
    for c in candidates:  # a loser is skipped for what the gate would refuse, or trails on validation
        if c is not chosen:
            skipped = bool(accepted and refused[c.name])
            assert why[c.name].startswith("skipped: ") if skipped else "below the chosen on validation" in why[c.name]
    assert report.best is chosen and report.selection == {"split": "validation", "metric": "spearman",
                                                          "value": chosen.validation["spearman"]}
    assert mlflow.get_run(chosen.run_id).data.metrics["val_spearman"] == pytest.approx(chosen.validation["spearman"])
    table = report.table.set_index("candidate")
    assert table.loc[chosen.name, "val_spearman"] == chosen.validation["spearman"]
    assert table.loc[chosen.name, "test_spearman"] == chosen.metrics["spearman"]
    assert report.rows == {"train": len(data.rows("train")), "validation": len(data.rows("val")),
                           "test": len(data.rows("test")), "quarantined": 0}
    assert "majority/mean baseline" in set(report.table["candidate"])
    assert {"social", "image"} == set(report.table["inputs"][:2])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent)}
    assert {"comparison.md", "comparison.html"} <= artifacts


def test_time_split_tests_on_the_latest_posts(binary):
    data, _ = binary
    timed = TrainingData(data.snapshot, "binary", data.settings, split="time")
    latest_train = timed.rows("train")["posted_at"].max()
    assert timed.rows("test")["posted_at"].min() >= latest_train


def test_repeats_and_tuning(binary, capsys):
    data, parent = binary
    settings = data.settings.model_copy(deep=True)
    settings.train.repeats, settings.train.tune, settings.train.tune_trials = 3, True, 2
    tuned = TrainingData(data.snapshot, "binary", settings)
    repeated = []

    def scored_repeats(*args, **kwargs):
        repeated.append(repeat_scores(*args, **kwargs))
        return repeated[-1]

    with mock.patch("pipelines.training.runs.repeat_scores", side_effect=scored_repeats):
        candidate = train_candidate("stats-gb", tuned, parent, quick=True)
    (values,) = repeated  # one score per repeated split, each a real ROC AUC
    assert len(values) == 3 and np.all((values >= 0) & (values <= 1)), values
    mean, std = candidate.metrics["repeat_roc_auc_mean"], candidate.metrics["repeat_roc_auc_std"]
    assert mean == pytest.approx(np.mean(values)) and std == pytest.approx(np.std(values))
    trials = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{candidate.run_id}'")
    assert len(trials) == 2 and "metrics.held_out_roc_auc" in trials
    printed = capsys.readouterr().out  # the progress a flow's log_prints carries to the Prefect run's logs
    assert "stats-gb trial 1/2: held-out roc_auc" in printed and "stats-gb trial 2/2" in printed
    table = comparison_table([candidate], {"roc_auc": 0.5}, {})
    assert table.loc[0, "roc_auc repeats"] == f"{mean:.3f} ± {std:.3f}"


def test_tuning_never_sees_the_validation_split(binary):
    """Optuna's trials fit on most of the training split and are scored on the rest of it: their rows are
    training rows only, whole users on each side, and flipping every validation label leaves the search
    exactly as it was (its trials scored the validation split before)."""
    data, parent = binary
    view = tuning_view(data)
    train_ids = set(data.rows("train")["image_id"])
    assert set(view.manifest["image_id"]) == train_ids and len(view.rows("val"))
    assert not set(view.groups("train")) & set(view.groups("val"))
    settings = data.settings.model_copy(deep=True)
    settings.train.tune_trials, settings.train.tune_budget_s = 3, 600
    manifest = data.manifest.copy()
    validation = manifest["split"] == "val"
    manifest.loc[validation, "label"] = 1 - manifest.loc[validation, "label"]
    chosen = []
    for rows in (data.manifest, manifest):
        tuned = data.view(rows)
        tuned.settings = settings
        with mlflow.start_run(run_id=parent):  # as training calls it: inside the candidate's run
            chosen.append(tune("colors-svm", tuned, parent, quick=True))
    assert chosen[0] == chosen[1]


def test_require_faces_refuses_a_set_without_faces(binary):
    data, _ = binary
    with pytest.raises(ValueError, match="require-faces"):
        TrainingData(data.snapshot, "binary", data.settings, require_faces=True)


def test_pairwise_accuracy_within_groups():
    engagement = np.array([1, 2, 3, 10, 20])
    groups = np.array(["a", "a", "a", "b", "b"])
    assert evaluation.pairwise_accuracy(engagement, engagement * 1.0, groups) == 1.0
    assert evaluation.pairwise_accuracy(engagement, -engagement * 1.0, groups) == 0.0
    assert evaluation.pairwise_accuracy(engagement, np.zeros(5), groups) == 0.5

"""Scoring an unlogged fit, seed 002's repeated splits, and Optuna tuning on a part of the training split."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from pipelines import evaluation, tracking
from pipelines.models import backends
from pipelines.tasks import PRIMARY
from pipelines.training.candidates import CANDIDATES
from pipelines.training.data import TrainingData
from pipelines.training.fitted import Fitted


def score_fitted(fitted: Fitted, data: TrainingData, split: str) -> np.ndarray:
    """Scores of an unlogged model on a split (sklearn models reuse the cached features)."""
    backend = backends.load(fitted.config, fitted.artifacts)
    if fitted.config["kind"] == "sklearn":
        x = data.x(split, backend.featurizer)[backend.columns]
        return backend.estimator.predict_proba(x)[:, 1] if data.task == "binary" else backend.estimator.predict(x)
    return backend.score(data.split_images(split), data.social(split))


def repeat_scores(name: str, data: TrainingData, quick: bool, repeats: int, params: dict | None = None) -> np.ndarray:
    """Seed 002's protocol: K grouped 9:1 splits of the non-test rows, the primary metric of each."""
    pool = data.manifest[data.manifest["split"] != "test"]
    groups = (pool["group"] if "group" in pool else pool["image_id"]).astype(str)
    values = []
    for r, (_, held) in enumerate(GroupShuffleSplit(repeats, test_size=0.1, random_state=data.settings.train.seed)
                                  .split(pool, groups=groups)):
        split = pool["split"].to_numpy().copy()
        split[held] = "test"
        view = data.view(pool.assign(split=split))
        with tempfile.TemporaryDirectory() as tmp:
            fitted = CANDIDATES[name].fit(view, Path(tmp), quick, params)
            scores = score_fitted(fitted, view, "test")
        values.append(evaluation.task_metrics(data.task, view.y("test"), scores)[PRIMARY[data.task]])
    return np.asarray(values, dtype=float)


def tuning_view(data: TrainingData) -> TrainingData:
    """The training split alone, a grouped part of it (the validation split's share) standing in for
    validation: the trials never see the validation split, where the tuned candidate is then compared."""
    return data.view(data.ensure_val(data.rows("train").reset_index(drop=True)))


def tune(name: str, data: TrainingData, run_id: str, quick: bool) -> dict:
    """Optuna search within the time budget, each trial fitted on most of the training split and scored on
    the rest (:func:`tuning_view`); each trial a nested MLflow run."""
    import optuna

    space = CANDIDATES[name].space
    if space is None:
        raise ValueError(f"{name} has no search space; tunable: {sorted(n for n, c in CANDIDATES.items() if c.space)}")
    s = data.settings.train
    quiet = tuning_view(data)
    experiment_id = mlflow.get_run(run_id).info.experiment_id

    def objective(trial) -> float:
        params = space(trial)
        with tempfile.TemporaryDirectory() as tmp, tracking.start_run(
            run_name=f"{name}-trial-{trial.number}", parent_run_id=run_id, nested=True, experiment_id=experiment_id
        ):
            mlflow.set_tags({"candidate": name, "trial": trial.number})
            mlflow.log_params(params)
            fitted = CANDIDATES[name].fit(quiet, Path(tmp), quick, params)
            value = evaluation.task_metrics(data.task, quiet.y("val"), score_fitted(fitted, quiet, "val"))
            mlflow.log_metrics({f"held_out_{k}": v for k, v in value.items()})
        primary = value[PRIMARY[data.task]]
        return primary if np.isfinite(primary) else -np.inf

    def progress(study, trial) -> None:  # the console and, under a flow (log_prints), the Prefect run's logs
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        value = f"{trial.value:.3f}" if trial.value is not None else f"none ({trial.state.name.lower()})"
        best = f"{study.best_value:.3f}" if any(t.value is not None for t in study.trials) else "none"
        print(f"{name} trial {trial.number + 1}/{s.tune_trials}: held-out {PRIMARY[data.task]} {value} "
              f"(best {best}) in {seconds:.0f} s, {trial.params}", flush=True)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=s.seed))
    study.optimize(objective, n_trials=s.tune_trials, timeout=s.tune_budget_s, callbacks=[progress])
    mlflow.log_metrics({"tune_trials": len(study.trials), f"tune_best_held_out_{PRIMARY[data.task]}": study.best_value})
    return study.best_params

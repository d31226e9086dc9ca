"""A candidate's MLflow run: fit it, log it as the project's pyfunc, and score the logged model itself
on the validation split (what candidates are chosen on) and once on the frozen test split (what is
reported), with its plots and the drift monitor's reference beside it."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np

from pipelines import evaluation, tracking
from pipelines.data.images import to_jpeg
from pipelines.models import distributed
from pipelines.models.pyfunc import log_model
from pipelines.tasks import PRIMARY
from pipelines.training.candidates import CANDIDATES
from pipelines.training.data import TrainingData
from pipelines.training.tuning import repeat_scores, tune


@dataclass
class Candidate:
    name: str
    family: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]  # on the test split, for the report
    params: dict
    inputs: str = "image"
    validation: dict[str, float] = field(default_factory=dict)  # on the validation split, for choosing


def _log_evaluation(data: TrainingData, scores: np.ndarray, out: Path) -> None:
    test = data.rows("test")
    y = data.y("test")
    plots = (evaluation.binary_plots if data.task == "binary" else evaluation.regression_plots)(y, scores, out)
    order = np.argsort(-scores)
    images = [data.images[i] for i in test["image_id"]]
    plots.append(evaluation.image_grid([images[i] for i in order[:25]], scores[order[:25]], "Top 25", out))
    plots.append(evaluation.image_grid([images[i] for i in order[-25:]], scores[order[-25:]], "Bottom 25", out))
    for path in plots:
        mlflow.log_artifact(str(path), "evaluation")


def _log_reference(data: TrainingData, scores: np.ndarray, workdir: Path) -> None:
    """The monitored features and scores of the test split: what the drift monitor compares the
    served requests with (the model carries the same profiler, so the service computes them alike)."""
    path = workdir / "profile.parquet"
    data.test_profile.assign(score=scores).to_parquet(path, index=False)
    mlflow.log_artifact(str(path), "reference")


def _test_metrics(data: TrainingData, scores: np.ndarray) -> dict[str, float]:
    metrics = evaluation.task_metrics(data.task, data.y("test"), scores)
    metrics["pairwise_accuracy"] = evaluation.pairwise_accuracy(data.engagement("test"), scores, data.groups("test"))
    return metrics


def train_candidate(name: str, data: TrainingData, parent_run_id: str, quick: bool = False) -> Candidate | None:
    """Fit ``name``, log it in a child run of ``parent_run_id`` and score the logged model on the test split.

    Under ``torchrun`` the other ranks only take part in fitting and return ``None``.
    """
    from pipelines.training.export import export_featurizer, export_network, export_profiler  # torch, ONNX: here only

    spec = CANDIDATES[name]
    s = data.settings.train
    if not distributed.is_main():
        with tempfile.TemporaryDirectory() as tmp:
            spec.fit(data, Path(tmp), quick)
        return None
    # MLflow puts a nested run in the *default* experiment unless told: keep it beside its parent
    experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    with tempfile.TemporaryDirectory() as tmp, tracking.start_run(
        run_name=name, parent_run_id=parent_run_id, nested=True, experiment_id=experiment_id
    ) as run:
        inputs = spec.inputs
        mlflow.set_tags({"candidate": name, "family": spec.family, "task": data.task, "snapshot": data.snapshot.id,
                         "inputs": inputs, "split": data.split, "require_faces": str(data.require_faces)})
        mlflow.log_input(data.dataset, context="training")
        started = time.perf_counter()
        params = tune(name, data, run.info.run_id, quick) if s.tune and spec.space else None
        fitted = spec.fit(data, Path(tmp), quick, params)
        fit_seconds = time.perf_counter() - started
        mlflow.log_params({**fitted.params, "split": data.split, "require_faces": data.require_faces,
                           "tuned": params is not None})
        fitted.config["limits"] = data.settings.images.model_dump()
        example = to_jpeg(next(iter(data.images.values())))
        profiler = data.profiler.save(Path(tmp) / "profiler.json")
        artifacts = {**fitted.artifacts, "profiler": str(profiler)}
        if fitted.config["kind"] == "torch":  # the network's ONNX graph, checked on the validation images
            export_network(fitted, data, Path(tmp))
            artifacts |= fitted.artifacts
        if profiler_graph := export_profiler(data, fitted.config):
            artifacts["profiler_onnx"] = profiler_graph
        if featurizer_graph := export_featurizer(data, fitted.config):
            artifacts["featurizer_onnx"] = featurizer_graph
        info = log_model(fitted.config, artifacts, example)
        model = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model()
        val_images, val_social = data.split_images("val"), data.social("val")
        val_scores = model.predict_images(val_images, val_social)["score"].to_numpy()
        primary = PRIMARY[data.task]
        validation = {**evaluation.task_metrics(data.task, data.y("val"), val_scores),
                      f"{primary}_se": evaluation.bootstrap_se(data.y("val"), val_scores, primary, seed=s.seed),
                      **evaluation.stability(model, val_images, val_scores, val_social)}
        mlflow.log_metrics({f"val_{k}": v for k, v in validation.items()})
        scores = model.predict_images(data.split_images("test"), data.social("test"))["score"].to_numpy()
        metrics = {**_test_metrics(data, scores), **fitted.metrics, "fit_seconds": fit_seconds}
        if s.repeats > 1:
            values = repeat_scores(name, data, quick, s.repeats, params)
            metrics |= {f"repeat_{primary}_mean": float(np.nanmean(values)),
                        f"repeat_{primary}_std": float(np.nanstd(values))}
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        for table_name, table in fitted.tables.items():
            mlflow.log_text(table.to_csv(index=False), f"evaluation/{table_name}.csv")
        if fitted.history:
            mlflow.log_artifact(str(evaluation.loss_curves(fitted.history, Path(tmp) / "plots")), "evaluation")
        _log_evaluation(data, scores, Path(tmp) / "plots")
        _log_reference(data, scores, Path(tmp))
        params_out = {**fitted.params, "split": data.split, "require_faces": data.require_faces}
        return Candidate(name, spec.family, run.info.run_id, info.model_uri, metrics, params_out, inputs, validation)

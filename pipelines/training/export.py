"""Export at training, verified: a CNN candidate's network and the drift profile's embedding trunk become
ONNX graphs logged beside the torch weights, each checked against torch: the CNN on the run's validation
images, the pretrained trunk (the same for every run of a machine, so exported once into its cache) on the
training images of the run that exported it.

The parity record (the largest absolute difference, and for a CNN its validation metric computed from
both) goes into the model's config, where the loaded model reads it (a graph that failed serves with
torch, and says so), and onto the run as metrics and a tag.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np

from pipelines import evaluation, runtime
from pipelines.models.backends import TorchBackend
from pipelines.tasks import PRIMARY
from pipelines.training.data import TrainingData
from pipelines.training.fitted import Fitted


def export_network(fitted: Fitted, data: TrainingData, workdir: Path) -> dict:
    """Export a CNN candidate, score the validation images with torch (float32, CPU) and with the graph in
    ONNX Runtime, and record the parity in ``fitted.config["onnx"]``; the graph joins the artifacts."""
    images, social, truth = data.split_images("val"), data.social("val"), data.y("val")
    reference = TorchBackend(fitted.config, fitted.artifacts, runtime="torch")
    reference.model.cpu()  # parity against float32 torch, whatever the training device
    primary = PRIMARY[data.task]
    try:
        graph = runtime.export(reference.model, fitted.config["image_px"], workdir / "model.onnx")
        torch_scores = reference.score(images, social)
        reference.model = runtime.OnnxNetwork(graph)
        onnx_scores = reference.score(images, social)
    except Exception as exc:  # an operator the exporter or the runtime lacks: the model serves with torch
        record = {"passed": False, "reason": f"export failed: {type(exc).__name__}: {exc}"[:500]}
    else:
        record = runtime.parity(torch_scores, onnx_scores, **{
            f"val_{primary}_torch": _metric(data, truth, torch_scores, primary),
            f"val_{primary}_onnx": _metric(data, truth, onnx_scores, primary)})
        fitted.artifacts["onnx"] = str(graph)
    fitted.config["onnx"] = record
    _log("onnx", record)
    return record


def export_profiler(data: TrainingData, config: dict) -> str | None:
    """The drift profile's embedding trunk as the machine's cached ONNX graph (see
    ``embeddings.trunk_graph``), its parity record, checked against torch when the graph was exported, in
    ``config["profiler_onnx"]`` and on the run. The graph's path, or None when the profile has no
    embedding or the graph failed."""
    if not data.profiler.components:
        return None
    graph, record = data.trunk
    config["profiler_onnx"] = record
    _log("profiler_onnx", record)
    return graph if record["passed"] else None


def export_featurizer(data: TrainingData, config: dict) -> str | None:
    """The featurizer's embedding trunk, for a candidate that reads the ``embeddings`` group, as the
    machine's cached ONNX graph (``embeddings.trunk_graph``), its parity record in ``config["featurizer_onnx"]``
    and on the run: the logged model then embeds requests without torch. The graph's path, or None."""
    featurizer = config.get("featurizer", {})
    if "embeddings" not in featurizer.get("groups", ()):
        return None
    graph, record = data.trunk_at(featurizer["embed_backbone"], featurizer["embed_px"])
    config["featurizer_onnx"] = record
    _log("featurizer_onnx", record)
    return graph if record["passed"] else None


def _metric(data: TrainingData, truth: np.ndarray, scores: np.ndarray, primary: str) -> float:
    return float(evaluation.task_metrics(data.task, truth, scores)[primary])


def _log(prefix: str, record: dict) -> None:
    if mlflow.active_run() is None:
        return
    mlflow.set_tag(f"{prefix}_parity", "passed" if record["passed"] else f"failed: {record['reason']}"[:5000])
    mlflow.log_metrics({f"{prefix}_{k}": float(v) for k, v in record.items()
                        if isinstance(v, float | int) and not isinstance(v, bool) and np.isfinite(v)})

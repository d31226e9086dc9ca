"""Export at training, verified: a CNN candidate's network and the drift profile's embedding trunk become
ONNX graphs logged beside the torch weights, each checked against torch on the validation images.

The parity record (the largest absolute difference, and for a CNN its validation metric computed from
both) goes into the model's config, where the loaded model reads it (a graph that failed serves with
torch, and says so), and onto the run as metrics and a tag.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np

from pipelines import evaluation, runtime
from pipelines.features import embeddings
from pipelines.models.backends import TorchBackend
from pipelines.tasks import PRIMARY
from pipelines.training.data import TrainingData
from pipelines.training.fitted import Fitted

PROFILER_TOLERANCE = 1e-3  # the profile's projected embedding: PCA coordinates of magnitude ~1–10


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
    """Export the drift profile's embedding trunk (once per process and backbone), check the profile's
    projected embedding of the validation images both ways, and record it in ``config["profiler_onnx"]``.
    The graph's path, or None when the profile has no embedding or the graph failed."""
    profiler = data.profiler
    if not profiler.components:
        return None
    images = data.split_images("val")
    try:
        graph = _trunk_graph(profiler.embed_backbone, profiler.embed_px)
        torch_rows = profiler.transform(images)[profiler.projection_columns].to_numpy()
        exported = type(profiler)(**{k: v for k, v in vars(profiler).items() if k != "network"})
        exported.use_graph(graph, None)
        onnx_rows = exported.transform(images)[profiler.projection_columns].to_numpy()
    except Exception as exc:
        record = {"passed": False, "reason": f"export failed: {type(exc).__name__}: {exc}"[:500]}
    else:
        record = runtime.parity(torch_rows, onnx_rows, PROFILER_TOLERANCE)
    config["profiler_onnx"] = record
    _log("profiler_onnx", record)
    return graph if record["passed"] else None


_TRUNKS: dict[tuple[str, int], str] = {}
_TRUNK_DIRS: list[tempfile.TemporaryDirectory] = []  # removed when the process ends


def _trunk_graph(name: str, px: int) -> str:
    """The pretrained trunk's graph: the same for every candidate of a process, so exported once."""
    if (name, px) not in _TRUNKS:
        if not _TRUNK_DIRS:
            _TRUNK_DIRS.append(tempfile.TemporaryDirectory(prefix="popularity-onnx-"))
        path = Path(_TRUNK_DIRS[0].name) / f"{name}-{px}.onnx"
        _TRUNKS[(name, px)] = str(runtime.export(embeddings.backbone(name), px, path))
    return _TRUNKS[(name, px)]


def _metric(data: TrainingData, truth: np.ndarray, scores: np.ndarray, primary: str) -> float:
    return float(evaluation.task_metrics(data.task, truth, scores)[primary])


def _log(prefix: str, record: dict) -> None:
    if mlflow.active_run() is None:
        return
    mlflow.set_tag(f"{prefix}_parity", "passed" if record["passed"] else f"failed: {record['reason']}"[:5000])
    mlflow.log_metrics({f"{prefix}_{k}": float(v) for k, v in record.items()
                        if isinstance(v, float | int) and not isinstance(v, bool) and np.isfinite(v)})

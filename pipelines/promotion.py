"""The promotion gate: a challenger becomes champion only if it beats the champion by the margin on the
same frozen test split and passes the sanity checks (floor, no NaN, latency, flip and JPEG stability).
The decision and its numbers are written on the model version either way."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from pipelines import evaluation, registry
from pipelines.data.images import to_jpeg
from pipelines.data.snapshots import Snapshot
from pipelines.settings import Settings
from pipelines.tasks import PRIMARY, TARGET
from pipelines.training.data import TrainingData


@dataclass
class GateResult:
    passed: bool
    version: str
    champion_version: str | None
    checks: dict[str, bool] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        failed = [k for k, ok in self.checks.items() if not ok]
        numbers = ", ".join(f"{k}={v:.4g}" for k, v in self.numbers.items())
        verdict = "promoted to champion" if self.passed else f"not promoted: failed {', '.join(failed)}"
        return f"{verdict} ({numbers})"


def _load(name: str, version: str):
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def _behaviour(model, images: list[Image.Image], base: np.ndarray, social: pd.DataFrame) -> dict[str, float]:
    """How much the score moves under a horizontal flip and a JPEG re-compression."""
    flipped = model.predict_images([ImageOps.mirror(img) for img in images], social)["score"].to_numpy()
    recompressed = [Image.open(io.BytesIO(to_jpeg(img, quality=70))).convert("RGB") for img in images]
    jpeg = model.predict_images(recompressed, social)["score"].to_numpy()
    spread = max(float(np.std(base)), 1e-9)
    return {"flip_shift": float(np.mean(np.abs(flipped - base))) / spread,
            "jpeg_shift": float(np.mean(np.abs(jpeg - base))) / spread}


def _latency_ms(model, images: list[Image.Image]) -> float:
    sample = images[:32]
    model.predict_images(sample[:2])  # warm-up
    start = time.perf_counter()
    model.predict_images(sample)
    return (time.perf_counter() - start) * 1000 / len(sample)


def gate(task: str, settings: Settings) -> GateResult:
    """Score challenger and champion on the challenger's frozen test split and apply every check."""
    c = registry.client(settings)
    name = settings.model_name(task)
    version = registry.alias_version(c, name, registry.CHALLENGER)
    if version is None:
        raise LookupError(f"{name} has no challenger; run `popularity train` first")
    champion_version = registry.alias_version(c, name, registry.CHAMPION)
    mv = c.get_model_version(name, version)
    snapshot = Snapshot.open(settings.datasets_dir, mv.tags["snapshot"])
    data = TrainingData(snapshot, task, settings, split=mv.tags.get("split", "group"),
                        require_faces=mv.tags.get("require_faces") == "True")
    test = data.rows("test")
    target = TARGET[task]
    images = snapshot.decode_images(test["image_path"], settings.images)
    primary = PRIMARY[task]
    challenger = _load(name, version)
    social = data.social("test")
    scores = challenger.predict_images(images, social)["score"].to_numpy()
    value = evaluation.task_metrics(task, test[target].to_numpy(), scores)[primary]
    p = settings.promotion
    numbers = {f"challenger_{primary}": value, "latency_ms": _latency_ms(challenger, images),
               **_behaviour(challenger, images, scores, social)}
    floor = p.floor_roc_auc if task == "binary" else p.floor_spearman
    checks = {
        "no_nan": bool(np.all(np.isfinite(scores))),
        "floor": bool(np.isfinite(value) and value >= floor),
        "latency": numbers["latency_ms"] <= p.latency_budget_ms,
        "flip_stability": numbers["flip_shift"] <= p.flip_tolerance,
        "jpeg_stability": numbers["jpeg_shift"] <= p.jpeg_tolerance,
    }
    if champion_version and champion_version != version:
        champion_scores = _load(name, champion_version).predict_images(images, social)["score"].to_numpy()
        champion_value = evaluation.task_metrics(task, test[target].to_numpy(), champion_scores)[primary]
        numbers[f"champion_{primary}"] = champion_value
        checks["beats_champion"] = bool(value >= champion_value + p.margin) or not np.isfinite(champion_value)
    return GateResult(all(checks.values()), version, champion_version, checks, numbers)


def promote(task: str, settings: Settings) -> GateResult:
    """Run the gate; on success move ``champion`` to the challenger. The decision is written either way."""
    c = registry.client(settings)
    name = settings.model_name(task)
    result = gate(task, settings)
    c.update_model_version(name, result.version, description=result.reason)
    c.set_model_version_tag(name, result.version, "gate", "passed" if result.passed else "failed")
    c.set_model_version_tag(name, result.version, "gate_reason", result.reason)
    c.set_model_version_tag(name, result.version, "gate_numbers", json.dumps(result.numbers))
    if result.passed and result.champion_version != result.version:
        if result.champion_version:
            c.set_model_version_tag(name, result.version, "previous_champion", result.champion_version)
        c.set_registered_model_alias(name, registry.CHAMPION, result.version)
    return result

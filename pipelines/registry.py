"""The model registry: register challengers, gate them against the champion, promote and roll back.

Aliases only (stages are deprecated): ``challenger`` is the latest registered best candidate,
``champion`` is what the service loads. Every decision and its numbers are written on the model
version (description and tags), so the MLflow UI shows why a version is or is not champion.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image, ImageOps

from pipelines import evaluation
from pipelines.images import decode, to_jpeg
from pipelines.settings import Settings
from pipelines.snapshots import Snapshot
from pipelines.training import TrainingData

CHAMPION, CHALLENGER = "champion", "challenger"


def client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def register_challenger(candidate, task: str, snapshot_id: str, baseline: dict, oracle: dict,
                        settings: Settings):
    """Register ``candidate`` and alias it ``challenger``; a failure midway removes the version."""
    c = client(settings)
    name = settings.model_name(task)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description=f"Image popularity, {task} task. Aliases: champion, challenger.")
    version = mlflow.register_model(candidate.model_uri, name)
    try:
        tags = {
            "candidate": candidate.name, "family": candidate.family, "task": task, "snapshot": snapshot_id,
            "run_id": candidate.run_id, "metrics": json.dumps(candidate.metrics),
            "baseline": json.dumps(baseline), "oracle": json.dumps(oracle),
            "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
            # the gate rebuilds the same test split from these
            "split": str(candidate.params.get("split", "group")),
            "require_faces": str(bool(candidate.params.get("require_faces", False))),
        }
        for key, value in tags.items():
            c.set_model_version_tag(name, version.version, key, value)
        c.set_registered_model_alias(name, CHALLENGER, version.version)
    except BaseException:
        c.delete_model_version(name, version.version)
        raise
    return c.get_model_version(name, version.version)


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


def _alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return c.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


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
    c = client(settings)
    name = settings.model_name(task)
    version = _alias_version(c, name, CHALLENGER)
    if version is None:
        raise LookupError(f"{name} has no challenger; run `popularity train` first")
    champion_version = _alias_version(c, name, CHAMPION)
    mv = c.get_model_version(name, version)
    snapshot = Snapshot.open(settings.datasets_dir, mv.tags["snapshot"])
    data = TrainingData(snapshot, task, settings, split=mv.tags.get("split", "group"),
                        require_faces=mv.tags.get("require_faces") == "True")
    test = data.rows("test")
    target = "label" if task == "binary" else "score"
    limits = settings.images
    images = [decode(snapshot.read_image(p), limits.max_bytes, limits.max_pixels)[0] for p in test["image_path"]]
    primary = evaluation.PRIMARY[task]
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
    c = client(settings)
    name = settings.model_name(task)
    result = gate(task, settings)
    c.update_model_version(name, result.version, description=result.reason)
    c.set_model_version_tag(name, result.version, "gate", "passed" if result.passed else "failed")
    c.set_model_version_tag(name, result.version, "gate_reason", result.reason)
    c.set_model_version_tag(name, result.version, "gate_numbers", json.dumps(result.numbers))
    if result.passed and result.champion_version != result.version:
        if result.champion_version:
            c.set_model_version_tag(name, result.version, "previous_champion", result.champion_version)
        c.set_registered_model_alias(name, CHAMPION, result.version)
    return result


def rollback(task: str, settings: Settings) -> str:
    """Give ``champion`` back to the version it replaced; returns that version."""
    c = client(settings)
    name = settings.model_name(task)
    current = _alias_version(c, name, CHAMPION)
    if current is None:
        raise LookupError(f"{name} has no champion to roll back")
    previous = c.get_model_version(name, current).tags.get("previous_champion")
    if not previous:
        raise LookupError(f"{name} version {current} replaced no earlier champion; nothing to roll back to")
    c.set_registered_model_alias(name, CHAMPION, previous)
    c.set_model_version_tag(name, current, "gate", "rolled_back")
    c.update_model_version(name, current, description=f"rolled back: champion returned to version {previous}")
    return previous


def champion_summary(task: str, settings: Settings) -> dict:
    """The ``model`` JSON summary: name, version, alias, family, test metrics and baseline."""
    c = client(settings)
    name = settings.model_name(task)
    version = _alias_version(c, name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no champion yet; run `popularity run` or `popularity promote`")
    tags = c.get_model_version(name, version).tags
    return {
        "name": name, "version": version, "alias": CHAMPION, "family": tags.get("family"),
        "candidate": tags.get("candidate"), "snapshot": tags.get("snapshot"), "run_id": tags.get("run_id"), "trained_at": tags.get("trained_at"),
        "metrics": json.loads(tags.get("metrics", "{}")), "baseline": json.loads(tags.get("baseline", "{}")),
        "oracle": json.loads(tags.get("oracle", "{}")), "gate_reason": tags.get("gate_reason"),
    }

"""The scorer: the champion behind one adaptively batched method, following the registry.

``Scorer`` holds the champion (on CUDA when there is a GPU) and scores the decoded images of concurrent
requests in one batch. It loads ``models:/<name>@champion`` from MLflow (:func:`pipelines.registry.load_model`),
or, inside a built Bento, the copy packed into it (``serving.bento_model``), so a Bento runs with no
MLflow server. ``refresh`` follows the champion alias: when it moved, the new champion is loaded beside
the old one and swapped in between two batches, so a promotion reaches every replica without a restart
or a failed request. It starts with no champion too, and says why; a champion that cannot be loaded
leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import anyio
import bentoml
import pandas as pd
from PIL import Image

from pipelines import registry
from pipelines.features.social import REQUEST_COLUMNS
from pipelines.settings import load_settings
from serving.readiness import LoadBackoff

settings = load_settings()  # a BentoML service module is an entry point: it reads the environment
SERVING = settings.serving

# The scorer's calls in flight: one per chunk of every request the API worker admits, the watcher's one.
SCORER_CALLS = SERVING.max_concurrency * -(-SERVING.max_batch_images // SERVING.max_batch_size) + 1


@dataclass
class Loaded:
    model: Any
    summary: dict


def load(packed: bentoml.Model | None) -> Loaded:
    """The champion's python model and summary (the packed copy if any, else the registry's), warmed up."""
    if packed is not None:
        loaded = Loaded(registry.load_python_model(packed.path_of("mlflow_model")), dict(packed.info.metadata))
    else:
        loaded = Loaded(*registry.load_model(settings.task, settings))
    warm_up(loaded)
    return loaded


def warm_up(loaded: Loaded) -> None:
    """Score and profile one blank photo before the model is swapped in or called ready: what a model
    loads lazily (the pretrained trunks behind its features and the drift profile, torch's first-call
    set-up) is paid here, off the request path, not by the first requests, which on a loaded machine
    waited past the traffic timeout for it."""
    blank = Image.new("RGB", (settings.images.model_side,) * 2, (128, 128, 128))
    social = pd.DataFrame([{}]).reindex(columns=REQUEST_COLUMNS)
    loaded.model.predict_images([blank], social)
    loaded.model.profile_images([blank])


def champion_version() -> str | None:
    """The version the registry's champion alias points at now (None: no champion yet)."""
    return registry.alias_version(registry.client(settings), settings.model_name(), registry.CHAMPION)


def why(exc: Exception) -> str:
    """An exception as one short line for ``/readyz`` and ``/metrics``."""
    return f"{exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__


@bentoml.service(name="popularity-scorer", workers=1, traffic={"timeout": 60, "max_concurrency": SCORER_CALLS},
                 resources={"gpu": 1} if SERVING.gpu else {})
class Scorer:
    """The champion behind one batched method; ``refresh`` follows the registry's alias, swapping the
    model between batches."""

    if SERVING.bento_model:
        packed = bentoml.models.BentoModel(SERVING.bento_model)

    def __init__(self) -> None:
        self.current: Loaded | None = None
        self.problem: str | None = None
        self.load_failures = 0
        self.backoff = LoadBackoff(SERVING.watch_interval_s or 10.0, SERVING.load_retry_max_s)
        self._lock = asyncio.Lock()
        if packed := getattr(self, "packed", None):
            self.current = load(packed)
            return
        try:
            self.current = load(None)
        except Exception as exc:  # no champion yet, or the registry is down: start, and say why
            self.problem = why(exc)

    def __is_ready__(self) -> bool:
        return self.current is not None

    @bentoml.api(batchable=SERVING.batching, max_batch_size=SERVING.max_batch_size,
                 max_latency_ms=SERVING.max_latency_ms)
    def score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score decoded images (``{"image": PIL.Image, "social": {...}, "profile": bool}``) of concurrent
        requests at once, with the drift monitor's features of those marked ``profile`` (computed here,
        batched, by the same model)."""
        current = self.current  # one read: a swap mid-batch cannot mix two models
        if current is None:
            return [{"error": "no_champion", "message": self.problem or "no champion loaded"} for _ in items]
        images = [item["image"] for item in items]
        social = pd.DataFrame([item.get("social") or {} for item in items]).reindex(columns=REQUEST_COLUMNS)
        result = current.model.predict_images(images, social)  # numbers and text, as the model reads them
        drawn = [i for i, item in enumerate(items) if item.get("profile", True)]
        profiled = current.model.profile_images([images[i] for i in drawn]).to_dict(orient="records") if drawn else []
        profiles = dict(zip(drawn, profiled, strict=True))
        summary = current.summary
        return [{"score": float(s), "label": int(lab), "model": summary["name"], "version": str(summary["version"]),
                 "profile": profiles.get(i)}
                for i, (s, lab) in enumerate(zip(result["score"], result["label"], strict=True))]

    @bentoml.api
    async def refresh(self, force: bool = False) -> dict:
        """Load the registry's champion if the alias moved, off the event loop, then swap it in; a
        champion that fails to load leaves the current one serving, and is tried again with backoff
        (``force``, from ``/reload``: now). Returns the status."""
        if getattr(self, "packed", None) is None:
            async with self._lock:  # one load at a time, however many replicas' API processes ask
                await self._follow_alias(force)
        return self._status()

    async def _follow_alias(self, force: bool = False) -> None:
        try:
            version = await anyio.to_thread.run_sync(champion_version)
        except Exception as exc:
            self.problem = why(exc)
            return
        if version is None:
            self.problem = None if self.current else f"{settings.model_name()} has no champion yet"
            return
        if self.current is not None and str(self.current.summary["version"]) == version:
            self.problem = None
            return
        if not force and not self.backoff.due(version, time.monotonic()):
            return  # it failed lately: its problem stands until the next try
        try:
            self.current = await anyio.to_thread.run_sync(load, None)
            self.problem = None
            self.backoff.loaded(version)
        except Exception as exc:
            self.load_failures += 1
            wait = self.backoff.failed(version, time.monotonic())
            self.problem = (f"could not load champion v{version}: {why(exc)} (failed {self.backoff.failures[version]}"
                            f" time(s); next try in {wait:.0f} s or at /reload)")

    @bentoml.api
    async def status(self) -> dict:
        return self._status()

    def _status(self) -> dict:  # API methods are not callable from inside the service: BentoML wraps them
        summary = self.current.summary if self.current else {}
        return {"ready": self.current is not None, "version": summary.get("version"), "problem": self.problem,
                "load_failures": self.load_failures}

    @bentoml.api
    async def info(self) -> dict:
        """The champion's summary, with the runtime that runs its networks and why (ONNX Runtime or torch)."""
        if self.current is None:
            return {}
        return {**self.current.summary, "runtime": getattr(self.current.model, "runtime", {})}

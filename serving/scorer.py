"""The scorer: the champion behind one adaptively batched method, following the registry.

``Scorer`` holds the champion (on CUDA when there is a GPU) and scores the decoded images of concurrent
requests in one batch. It loads ``models:/<name>@champion`` from MLflow (:func:`pipelines.registry.load_model`),
or, inside a built Bento, the copy packed into it (``serving.bento_model``), so a Bento runs with no
MLflow server. ``refresh`` follows the champion alias: when it moved, the new champion is loaded beside
the old one and swapped in between two batches, so a promotion reaches every replica without a restart
or a failed request. It starts with no champion too, and says why; a champion that cannot be loaded
leaves the old one serving.

With ``serving.shadow_share`` above 0 it follows the ``challenger`` alias the same way and holds that
version as a shadow (after a promotion, while ``promotion.rollback_watch_hours`` watch it, the replaced
champion behind the ``previous`` alias instead: :func:`pipelines.registry.shadow_target`): ``shadow``
scores what the API hands it after answering, and a challenger that fails to load or score is reported
(``shadow_problem``) and changes nothing else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from functools import partial
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

# The scorer's calls in flight: one per chunk of every request the API worker admits, the watcher's one,
# and with shadow scoring the API's shadow calls (at most max_concurrency at once).
SCORER_CALLS = (SERVING.max_concurrency * -(-SERVING.max_batch_images // SERVING.max_batch_size) + 1
                + (SERVING.max_concurrency if SERVING.shadow_share > 0 else 0))


@dataclass
class Loaded:
    model: Any
    summary: dict


def load(packed: bentoml.Model | None, version: str | None = None) -> Loaded:
    """The champion's python model and summary (the packed copy if any, else the registry's; with
    ``version``, that registered version), warmed up."""
    if packed is not None:
        loaded = Loaded(registry.load_python_model(packed.path_of("mlflow_model")), dict(packed.info.metadata))
    else:
        loaded = Loaded(*registry.load_model(settings.task, settings, version))
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


def champion_target() -> tuple[str, str] | None:
    """``(alias, version)`` of the registry's champion now (None: no champion yet)."""
    version = registry.alias_version(registry.client(settings), settings.model_name(), registry.CHAMPION)
    return None if version is None else (registry.CHAMPION, str(version))


def shadow_target(serving: str | None) -> tuple[str, str] | None:
    """``(alias, version)`` to score in shadow now beside the ``serving`` version: the watched previous
    champion, else the challenger (None: neither, or it is the version served)."""
    target = registry.shadow_target(registry.client(settings), settings.model_name())
    return None if target is None or target[1] == serving else target


def predict(loaded: Loaded, items: list[dict[str, Any]]) -> dict:
    """``loaded``'s scores and labels of decoded images with their social context."""
    social = pd.DataFrame([item.get("social") or {} for item in items]).reindex(columns=REQUEST_COLUMNS)
    return loaded.model.predict_images([item["image"] for item in items], social)


def shadow_predict(loaded: Loaded, items: list[dict[str, Any]]) -> tuple[pd.DataFrame, dict[int, dict]]:
    """The shadow's scores, and its own drift profile of the items the champion profiled (``profile``): the
    challenger's input-drift view, through its own projection of the embedding."""
    drawn = [i for i, item in enumerate(items) if item.get("profile")]
    profiled = loaded.model.profile_images([items[i]["image"] for i in drawn]).to_dict(orient="records") if drawn else []
    return predict(loaded, items), dict(zip(drawn, profiled, strict=True))


def why(exc: Exception) -> str:
    """An exception as one short line for ``/readyz`` and ``/metrics``."""
    return f"{exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__


@dataclass
class Held:
    """A model the scorer holds for a registry alias in a ``role`` (``champion``, or ``shadow``): the one loaded
    and its alias, why the alias' version is not the one loaded (``problem``), why the shadow last failed to
    score (the champion's failures reach its callers), the loads and scoring calls that failed, and when a
    version that failed to load is tried again. ``required`` (the champion): the service needs one."""

    role: str
    required: bool
    backoff: LoadBackoff = field(default_factory=lambda: LoadBackoff(SERVING.watch_interval_s or 10.0,
                                                                     SERVING.load_retry_max_s))
    loaded: Loaded | None = None
    alias: str | None = None
    problem: str | None = None
    score_problem: str | None = None
    failures: int = 0

    @property
    def version(self) -> str | None:
        return str(self.loaded.summary["version"]) if self.loaded else None

    def hold(self, loaded: Loaded | None, alias: str | None) -> None:
        self.loaded, self.alias, self.problem, self.score_problem = loaded, alias, None, None


@bentoml.service(name="popularity-scorer", workers=1, traffic={"timeout": 60, "max_concurrency": SCORER_CALLS},
                 resources={"gpu": 1} if SERVING.gpu else {})
class Scorer:
    """The champion behind one batched method; ``refresh`` follows the registry's alias, swapping the
    model between batches."""

    if SERVING.bento_model:
        packed = bentoml.models.BentoModel(SERVING.bento_model)

    def __init__(self) -> None:
        self.champion = Held("champion", required=True)
        # with serving.shadow_share above 0: the challenger, or the previous champion while it is watched
        self.shadow = Held("shadow", required=False)
        self._lock = asyncio.Lock()
        if packed := getattr(self, "packed", None):
            self.champion.hold(load(packed), registry.CHAMPION)
            return
        try:
            self.champion.hold(load(None), registry.CHAMPION)
        except Exception as exc:  # no champion yet, or the registry is down: start, and say why
            self.champion.problem = why(exc)

    def __is_ready__(self) -> bool:
        return self.champion.loaded is not None

    @bentoml.api(batchable=SERVING.batching, max_batch_size=SERVING.max_batch_size,
                 max_latency_ms=SERVING.max_latency_ms)
    def score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score decoded images (``{"image": PIL.Image, "social": {...}, "profile": bool}``) of concurrent
        requests at once, with the drift monitor's features of those marked ``profile`` (computed here,
        batched, by the same model)."""
        current = self.champion.loaded  # one read: a swap mid-batch cannot mix two models
        if current is None:
            return [{"error": "no_champion", "message": self.champion.problem or "no champion loaded"} for _ in items]
        images = [item["image"] for item in items]
        result = predict(current, items)  # numbers and text, as the model reads them
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
                await self._follow(self.champion, champion_target, force)
                if SERVING.shadow_share > 0:
                    await self._follow(self.shadow, partial(shadow_target, self.champion.version), force)
        return self._status()

    async def _follow(self, held: Held, target, force: bool = False) -> None:
        """Hold the version that ``target`` (asked on a thread) names as ``(alias, version)`` in ``held``: loaded
        beside the one held, then swapped in. One that fails to load is reported, counted and tried again with
        backoff (``force``, from ``/reload``: now), the one held so far kept."""
        try:
            found = await anyio.to_thread.run_sync(target)
        except Exception as exc:
            held.problem = f"{held.role} unknown: {why(exc)}"
            return
        if found is None:  # no such alias: a champion held is kept (none held is a problem), a shadow let go
            if held.required:
                held.problem = None if held.loaded else f"{settings.model_name()} has no champion yet"
            else:
                held.hold(None, None)
            return
        alias, version = found
        if held.version == version:
            held.alias, held.problem = alias, None
            return
        if not force and not held.backoff.due(version, time.monotonic()):
            return  # it failed lately: its problem stands until the next try
        try:
            held.hold(await anyio.to_thread.run_sync(load, None, version), alias)
            held.backoff.loaded(version)
        except Exception as exc:
            held.failures += 1
            wait = held.backoff.failed(version, time.monotonic())
            held.problem = (f"could not load {alias} v{version}{'' if alias == held.role else f' as {held.role}'}: "
                            f"{why(exc)} (failed {held.backoff.failures[version]} time(s); next try in {wait:.0f} s "
                            "or at /reload)")

    @bentoml.api
    async def shadow_score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The shadow's scores of decoded images the champion answered (``{"image", "social", "profile"}``),
        with its drift profile of those marked ``profile``, off the event loop; an ``error`` entry each when
        there is no shadow or it failed (counted, reported)."""
        shadow = self.shadow.loaded
        if shadow is None:
            return [{"error": "no_shadow", "message": self.shadow.problem or "no challenger"} for _ in items]
        version = str(shadow.summary["version"])  # the model read once: a swap mid-call cannot mix two
        try:
            result, profiles = await anyio.to_thread.run_sync(shadow_predict, shadow, items)
        except Exception as exc:  # the challenger or the watched previous champion: "shadow" names either
            self.shadow.failures += 1
            self.shadow.score_problem = f"shadow v{version} failed to score: {why(exc)}"
            return [{"error": "shadow_failed", "message": self.shadow.score_problem} for _ in items]
        self.shadow.score_problem = None
        return [{"score": float(s), "version": version, "profile": profiles.get(i)}
                for i, s in enumerate(result["score"])]

    @bentoml.api
    async def status(self) -> dict:
        return self._status()

    def _status(self) -> dict:  # API methods are not callable from inside the service: BentoML wraps them
        champion, shadow = self.champion, self.shadow
        summary = champion.loaded.summary if champion.loaded else {}
        status = {"ready": champion.loaded is not None, "version": summary.get("version"), "problem": champion.problem,
                  "load_failures": champion.failures, "gate_warning": summary.get("gate_warning")}
        if SERVING.shadow_share > 0:
            status |= {"shadow_version": shadow.version,
                       "shadow_problem": shadow.problem or shadow.score_problem, "shadow_failures": shadow.failures}
        return status

    @bentoml.api
    async def info(self) -> dict:
        """The champion's summary, with the runtime that runs its networks and why (ONNX Runtime or torch)."""
        current, shadow = self.champion.loaded, self.shadow
        if current is None:
            return {}
        info = {**current.summary, "runtime": getattr(current.model, "runtime", {})}
        if SERVING.shadow_share > 0:
            info["shadow"] = {"share": SERVING.shadow_share, "version": shadow.version, "alias": shadow.alias,
                              "problem": shadow.problem or shadow.score_problem}
        return info

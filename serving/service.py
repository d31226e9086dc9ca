"""The BentoML service: a public API service in front of an adaptively batched scorer.

``Popularity`` (the public service) authenticates, caps and decodes every upload in a thread, so
bad input is answered with a 4xx before it reaches the model; ``Scorer`` holds the champion (on
CUDA when there is a GPU) and scores the decoded images of concurrent requests in one batch.
The two are separate BentoML services so that decoding (CPU) never waits behind the model step
and the scorer alone asks for the GPU. ``Scorer`` loads ``models:/<name>@champion`` from MLflow,
or, inside a built Bento, the copy packed into it (``serving.bento_model``), so a Bento runs with no
MLflow server.

The service follows the registry: every ``serving.watch_interval_s`` it asks for the champion alias
and, when it moved, loads the new champion beside the old one and swaps them between two batches, so
a promotion reaches every replica without a restart or a failed request. It starts with no champion
too: ``/livez`` answers, ``/readyz`` is 503 with the reason until a champion appears. A champion
that cannot be loaded leaves the old one serving, and says so in ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import anyio
import bentoml
import pandas as pd
from bentoml.validators import ContentType
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from starlette.responses import JSONResponse

from monitoring.feedback import record as record_feedback
from monitoring.request_store import POST_ID_CHARS, BatchWriter, open_request_store
from pipelines.data.images import ImageError, decode
from pipelines.features.social import EARLY_VIEWS
from pipelines.models.pyfunc import REQUEST_COLUMNS
from pipelines.settings import load_settings
from serving.guards import guards
from serving.metrics import ServiceMetrics
from serving.readiness import ReadinessReason, ServingStatus

settings = load_settings()
SERVING = settings.serving
STATIC = Path(__file__).with_name("static")
Upload = Annotated[Path, ContentType("*/*")]
Count = Annotated[float | None, Field(ge=0, le=1e12, allow_inf_nan=False)]
Finite = Annotated[float | None, Field(allow_inf_nan=False)]
EarlyViews = Annotated[list[Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]],
                       Field(min_length=1, max_length=len(EARLY_VIEWS))]


def _integer_as_text(value: Any) -> Any:
    """BentoML reads a form field as JSON when it can, so a numeric post id arrives as an int."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# The caller's own id for a post, stored with the prediction so that its engagement can be joined later.
PostId = Annotated[str, BeforeValidator(_integer_as_text),
                   StringConstraints(min_length=1, max_length=POST_ID_CHARS, pattern=r"^[\x21-\x7e]+$")]

class Outcome(BaseModel):
    """One post's engagement so far, naming its prediction by ``prediction_id`` or the caller's ``post_id``.
    Counts are not range-checked here: the feedback suite rejects a bad row with its reasons."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    post_id: PostId | None = None
    observed_at: datetime | None = None
    posted_at: datetime | None = None
    likes: Finite = None
    views: Finite = None
    favorites: Finite = None
    comments: Finite = None
    followers: Finite = None
    daily_views: Annotated[list[float], Field(max_length=30)] | None = None  # views_d1, views_d2, … so far

    @model_validator(mode="after")
    def _names_a_prediction(self) -> Outcome:
        if self.prediction_id is None and self.post_id is None:
            raise ValueError("each row needs a prediction_id or a post_id")
        return self

    def fields(self) -> dict:
        daily = {f"views_d{d}": v for d, v in enumerate(self.daily_views or [], start=1)}
        return {**self.model_dump(exclude={"daily_views"}, exclude_none=True), **daily}


web = FastAPI(title="popularity web page")
web.mount("/static", StaticFiles(directory=STATIC), name="static")


@web.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


STATUS = ServingStatus()  # this API process's view of the scorer: read by /readyz and /metrics


def _load_champion(packed: bentoml.Model | None) -> tuple[Any, dict]:
    """The champion's python model and summary: the packed copy if any, else the registry's."""
    import mlflow

    from pipelines import registry

    if packed is not None:
        model = mlflow.pyfunc.load_model(packed.path_of("mlflow_model")).unwrap_python_model()
        return model, dict(packed.info.metadata)
    summary = registry.champion_summary(settings.task, settings)
    model = mlflow.pyfunc.load_model(f"models:/{summary['name']}/{summary['version']}").unwrap_python_model()
    return model, summary


def _champion_version() -> str | None:
    """The version the registry's champion alias points at now (None: no champion yet)."""
    from pipelines import registry

    return registry.alias_version(registry.client(settings), settings.model_name(), registry.CHAMPION)


@dataclass
class Loaded:
    model: Any
    summary: dict


# The scorer's calls in flight: one per chunk of every request the API worker admits, the watcher's one.
SCORER_CALLS = SERVING.max_concurrency * -(-SERVING.max_batch_images // SERVING.max_batch_size) + 1


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
        self._lock = asyncio.Lock()
        if packed := getattr(self, "packed", None):
            self.current = Loaded(*_load_champion(packed))
            return
        try:
            self.current = Loaded(*_load_champion(None))
        except Exception as exc:  # no champion yet, or the registry is down: start, and say why
            self.problem = _why(exc)

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
        result = current.model.predict_images(images, social.astype(float))
        drawn = [i for i, item in enumerate(items) if item.get("profile", True)]
        profiled = current.model.profile_images([images[i] for i in drawn]).to_dict(orient="records") if drawn else []
        profiles = dict(zip(drawn, profiled, strict=True))
        summary = current.summary
        return [{"score": float(s), "label": int(lab), "model": summary["name"], "version": str(summary["version"]),
                 "profile": profiles.get(i)}
                for i, (s, lab) in enumerate(zip(result["score"], result["label"], strict=True))]

    @bentoml.api
    async def refresh(self) -> dict:
        """Load the registry's champion if the alias moved, off the event loop, then swap it in; a
        champion that fails to load leaves the current one serving. Returns the status."""
        if getattr(self, "packed", None) is None:
            async with self._lock:  # one load at a time, however many replicas' API processes ask
                await self._follow_alias()
        return self._status()

    async def _follow_alias(self) -> None:
        try:
            version = await anyio.to_thread.run_sync(_champion_version)
        except Exception as exc:
            self.problem = _why(exc)
            return
        if version is None:
            self.problem = None if self.current else f"{settings.model_name()} has no champion yet"
            return
        if self.current is not None and str(self.current.summary["version"]) == version:
            self.problem = None
            return
        try:
            self.current = Loaded(*await anyio.to_thread.run_sync(_load_champion, None))
            self.problem = None
        except Exception as exc:
            self.load_failures += 1
            self.problem = f"could not load champion v{version}: {_why(exc)}"

    @bentoml.api
    async def status(self) -> dict:
        return self._status()

    def _status(self) -> dict:  # API methods are not callable from inside the service: BentoML wraps them
        summary = self.current.summary if self.current else {}
        return {"ready": self.current is not None, "version": summary.get("version"), "problem": self.problem,
                "load_failures": self.load_failures}

    @bentoml.api
    async def info(self) -> dict:
        return self.current.summary if self.current else {}


def _why(exc: Exception) -> str:
    return f"{exc}".splitlines()[0][:300] if str(exc) else type(exc).__name__


class Rejected(Exception):
    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status


@bentoml.service(name="popularity", workers=1, traffic={"timeout": 60, "max_concurrency": SERVING.max_concurrency})
@bentoml.asgi_app(web, path="/")
class Popularity:
    """Scores uploaded photos with the champion; see the README for each endpoint's contract."""

    scorer = bentoml.depends(Scorer)

    def __init__(self) -> None:
        self.metrics = ServiceMetrics(settings.monitoring_dir / "latest.json")
        store = settings.store
        self.requests = BatchWriter(open_request_store(settings), store.flush_rows, store.flush_interval_s,
                                    store.queue_max_rows)
        self.decoding = asyncio.Semaphore(SERVING.decode_concurrency)
        self.recording = asyncio.Lock()  # one feedback batch at a time: its checks read what the last one stored
        self.in_flight = 0

    def __metrics__(self, content: str) -> str:
        return (content + self.metrics.drift_lines() + self.metrics.performance_lines(settings.monitoring_dir / "performance.json")
                + self.metrics.model_lines(STATUS, self.requests.dropped))

    @bentoml.on_startup
    async def follow_the_champion(self) -> None:
        """Ask the scorer to follow the registry's alias now and every ``watch_interval_s``."""
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        # BentoML runs startup hooks before it connects the scorer's proxy, which gains its methods then
        while not hasattr(self.scorer.to_async, "refresh"):
            await asyncio.sleep(0.05)
        while True:
            reached = await self._refresh()
            if reached and SERVING.watch_interval_s <= 0:
                return
            await asyncio.sleep(SERVING.watch_interval_s if reached and SERVING.watch_interval_s > 0 else 1.0)

    async def _refresh(self) -> bool:
        """Update :data:`STATUS` from the scorer; False when the scorer cannot be reached (yet)."""
        try:
            STATUS.update(await self.scorer.to_async.refresh())
            return True
        except Exception as exc:
            STATUS.unreachable(_why(exc))
            return False

    def _prepare(self, path: Path) -> Any:
        """Decode one upload at the model step's size."""
        limits = settings.images
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise Rejected("too_large", f"the image is {size} bytes, above the cap of {limits.max_bytes}", 413)
        try:
            img, _ = decode(path.read_bytes(), limits.max_bytes, SERVING.max_pixels, limits.min_side,
                            max_side=limits.model_side)
        except ImageError as exc:
            raise Rejected(exc.reason, str(exc), 413 if exc.reason == "too_large" else 400) from exc
        return img

    async def _score(self, paths: list[Path], social: dict | None = None,
                     post_ids: list[str] | None = None) -> list[dict]:
        """One result per upload, in order: a prediction with its ``prediction_id`` (and the caller's
        ``post_id``), or an ``error`` entry for a bad image."""
        self.in_flight += 1
        try:
            return await self._score_uploads(paths, social, post_ids or [None] * len(paths),
                                             min(1.0, SERVING.profile_in_flight / self.in_flight))
        finally:
            self.in_flight -= 1

    async def _score_uploads(self, paths: list[Path], social: dict | None, post_ids: list[str | None],
                             profile_rate: float) -> list[dict]:
        prepared: list[Any] = []
        for path in paths:
            try:
                async with self.decoding:
                    prepared.append(await anyio.to_thread.run_sync(self._prepare, path))
            except Rejected as exc:
                self.metrics.reject(exc.reason)
                prepared.append(exc)
        good = [i for i, p in enumerate(prepared) if not isinstance(p, Rejected)]
        items = [{"image": prepared[i], "social": social, "profile": random.random() < profile_rate} for i in good]
        step = SERVING.max_batch_size
        chunks = await asyncio.gather(*(self._score_on_scorer(items[k:k + step])
                                        for k in range(0, len(items), step)))
        scored = dict(zip(good, (r for chunk in chunks for r in chunk)))
        results, records = [], []
        for i, p in enumerate(prepared):
            if isinstance(p, Rejected):
                results.append({"error": p.reason, "message": p.message, "status": p.status})
                continue
            r = scored[i]
            if "error" in r:  # no champion loaded yet
                results.append({**r, "status": 503})
                continue
            profile = r.pop("profile")
            self.metrics.observe(r["score"], r["label"], r["version"])
            ids = {"prediction_id": uuid.uuid4().hex, **({"post_id": post_ids[i]} if post_ids[i] else {})}
            drift_profile = {"profile_rate": profile_rate, **profile} if profile is not None else {}
            records.append({"ts": time.time(), "version": r["version"], "score": r["score"], "label": r["label"],
                            **ids, **drift_profile})
            results.append({**r, "model_version": r["version"], **ids})
        self.requests.submit(records)
        return results

    async def _score_on_scorer(self, items: list[dict], attempts: int = 3) -> list[dict]:
        """Scoring is idempotent, so a pooled connection that the scorer closed while idle (the
        keep-alive race under load) is retried on a fresh one instead of failing the request. aiohttp
        reports that race as a ``ClientConnectionError``, or, when it hits while the body is read, as
        a bare ``RuntimeError("Connection closed.")``."""
        for _ in range(attempts - 1):
            try:
                return await self.scorer.to_async.score(items)
            except aiohttp.ClientConnectionError:
                continue
            except RuntimeError as exc:
                if "Connection closed" not in str(exc):
                    raise
        return await self.scorer.to_async.score(items)

    def _refuse(self, reason: str, message: str, status: int = 400) -> JSONResponse:
        self.metrics.reject(reason)
        return JSONResponse({"error": reason, "message": message}, status_code=status)

    def _count_ok(self, images: list[Path], low: int, high: int, post_ids: list[str] | None) -> JSONResponse | None:
        if not low <= len(images) <= high:
            return self._refuse("image_count", f"send between {low} and {high} images; got {len(images)}")
        if post_ids is not None and len(post_ids) != len(images):
            return self._refuse("post_ids", f"send one post id per image, in order: {len(post_ids)} ids for "
                                            f"{len(images)} images")
        return None

    @bentoml.api
    async def predict(self, image: Upload, followers: Count = None, account_age_days: Count = None,
                      posts_per_week: Count = None, tags: Count = None, user_contacts: Count = None,
                      user_groups: Count = None, user_mean_views: Count = None, photo_count: Count = None,
                      post_id: PostId | None = None, daily_views: EarlyViews | None = None) -> dict:
        """Score one photo (multipart field ``image``), with optional social context (seed 002's user
        columns included), the cumulative views of its first days when it is already out (a JSON array,
        read by the nowcast) and the caller's ``post_id``; the answer's ``prediction_id`` names it."""
        start = time.perf_counter()
        social = {"followers": followers, "account_age_days": account_age_days, "posts_per_week": posts_per_week,
                  "tags": tags, "user_contacts": user_contacts, "user_groups": user_groups,
                  "user_mean_views": user_mean_views, "photo_count": photo_count,
                  **{f"views_d{d}": v for d, v in enumerate(daily_views or [], start=1)}}
        (result,) = await self._score([image], social, [post_id] if post_id else None)
        if "error" in result:
            return JSONResponse({"error": result["error"], "message": result["message"]},
                                status_code=result["status"])
        return {**result, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def predict_batch(self, images: list[Upload], post_ids: list[PostId] | None = None) -> dict:
        """Score up to 64 photos (repeated field ``images``): one result each, in order; ``post_ids`` is
        an optional JSON array of the caller's ids, one per image."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 1, SERVING.max_batch_images, post_ids):
            return refused
        results = await self._score(images, post_ids=post_ids)
        return {"results": results, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def compare(self, images: list[Upload], post_ids: list[PostId] | None = None) -> dict:
        """Rank 2–10 photos best first: "which photo should I post?". Ties keep upload order;
        ``post_ids`` as for ``predict_batch``."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 2, SERVING.compare_max_images, post_ids):
            return refused
        results = await self._score(images, post_ids=post_ids)
        bad = [{"index": i, **r} for i, r in enumerate(results) if "error" in r]
        if bad:
            return JSONResponse({"error": "bad_images", "message": "every image must be valid to rank them",
                                 "images": bad}, status_code=400)
        order = sorted(range(len(results)), key=lambda i: -results[i]["score"])
        ranking = [{"rank": rank, "index": i, **results[i]}
                   for rank, i in enumerate(order, 1)]
        return {"ranking": ranking, "best": order[0], "model": results[0]["model"],
                "version": results[0]["version"], "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def feedback(self, rows: Annotated[list[Outcome], Field(min_length=1, max_length=SERVING.max_feedback_rows)]
                       ) -> dict:
        """Record realized engagement (JSON ``{"rows": [...]}``) against the predictions it belongs to;
        each rejected row comes back with its reasons, and 422 when none was accepted."""
        await anyio.to_thread.run_sync(self.requests.flush, 10.0)  # answered predictions are known
        frame = pd.DataFrame([row.fields() for row in rows])
        async with self.recording:
            result = await anyio.to_thread.run_sync(record_feedback, frame, settings)
        body = result.summary()
        if not result.accepted:
            return JSONResponse({"error": "feedback_rejected", **body}, status_code=422)
        return body

    @bentoml.api
    async def reload(self) -> dict:
        """Follow the registry's champion now rather than at the next watch; requests in flight finish
        on the old one. 503 with the reason when no champion is loaded or the new one failed to load."""
        await self._refresh()
        if not STATUS.ready or STATUS.problem:
            return JSONResponse({"error": "reload_failed", "message": STATUS.problem, **asdict(STATUS)},
                                status_code=503)
        return await self.scorer.to_async.info()

    @web.get("/model")
    async def model(self) -> dict:
        """The champion being served: name, version, alias, family, test metrics, trained_at, snapshot."""
        summary = await self.scorer.to_async.info()
        if not summary:
            return JSONResponse({"error": "no_champion", "message": STATUS.problem}, status_code=503)
        return summary


ROUTE_FIELDS = {f"/{name}": tuple(api.input_spec.model_fields) for name, api in Popularity.apis.items()}
for guard, options in guards(settings, ROUTE_FIELDS):
    Popularity.add_asgi_middleware(guard, **options)
Popularity.add_asgi_middleware(ReadinessReason, status=STATUS)

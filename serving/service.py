"""The BentoML service: a public API service in front of an adaptively batched scorer.

``Popularity`` (the public service) authenticates, caps and decodes every upload in a thread, so
bad input is answered with a 4xx before it reaches the model; ``Scorer`` holds the champion (on
CUDA when there is a GPU) and scores the decoded images of concurrent requests in one batch.
The two are separate BentoML services so that decoding (CPU) never waits behind the model step
and the scorer alone asks for the GPU. ``Scorer`` loads ``models:/<name>@champion`` from MLflow,
or, inside a built Bento, the copy packed into it (``serving.bento_model``), so a Bento runs with no
MLflow server.
"""

from __future__ import annotations

import asyncio
import time
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
from pydantic import Field
from starlette.responses import JSONResponse

from monitoring.request_log import RequestLog
from pipelines.data.images import ImageError, decode
from pipelines.models.pyfunc import SOCIAL_COLUMNS
from pipelines.settings import load_settings
from serving.guards import guards
from serving.metrics import ServiceMetrics

settings = load_settings()
SERVING = settings.serving
STATIC = Path(__file__).with_name("static")
Upload = Annotated[Path, ContentType("*/*")]
Count = Annotated[float | None, Field(ge=0, le=1e12, allow_inf_nan=False)]

web = FastAPI(title="popularity web page")
web.mount("/static", StaticFiles(directory=STATIC), name="static")


@web.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


def _load_champion(packed: bentoml.Model | None) -> tuple[Any, dict]:
    """The champion's python model and summary: the packed copy if any, else the registry's."""
    import mlflow

    from pipelines import registry

    if packed is not None:
        model = mlflow.pyfunc.load_model(packed.path_of("mlflow_model")).unwrap_python_model()
        return model, dict(packed.info.metadata)
    summary = registry.champion_summary(settings.task, settings)
    model = mlflow.pyfunc.load_model(f"models:/{summary['name']}@champion").unwrap_python_model()
    return model, summary


@bentoml.service(name="popularity-scorer", workers=1, traffic={"timeout": 60},
                 resources={"gpu": 1} if SERVING.gpu else {})
class Scorer:
    """The champion behind one batched method; ``reload`` swaps it without pausing scoring."""

    if SERVING.bento_model:
        packed = bentoml.models.BentoModel(SERVING.bento_model)

    def __init__(self) -> None:
        self.current = _load_champion(getattr(self, "packed", None))

    @bentoml.api(batchable=SERVING.batching, max_batch_size=SERVING.max_batch_size,
                 max_latency_ms=SERVING.max_latency_ms)
    def score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score decoded images (``{"image": PIL.Image, "social": {...}}``) of concurrent requests at once,
        each with the drift monitor's features of its image (computed here, batched, by the same model)."""
        model, summary = self.current  # one read: a reload mid-batch cannot mix two models
        images = [item["image"] for item in items]
        social = pd.DataFrame([item.get("social") or {} for item in items]).reindex(columns=SOCIAL_COLUMNS)
        result = model.predict_images(images, social.astype(float))
        profiles = model.profile_images(images).to_dict(orient="records")
        return [{"score": float(s), "label": int(lab), "model": summary["name"], "version": str(summary["version"]),
                 "profile": profile}
                for s, lab, profile in zip(result["score"], result["label"], profiles, strict=True)]

    @bentoml.api
    async def reload(self) -> dict:
        """Load the registry's current champion off the event loop, then swap it in atomically."""
        self.current = await anyio.to_thread.run_sync(_load_champion, None)
        return self.current[1]

    @bentoml.api
    async def info(self) -> dict:
        return self.current[1]


class Rejected(Exception):
    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status


@bentoml.service(name="popularity", workers=1, traffic={"timeout": 60})
@bentoml.asgi_app(web, path="/")
class Popularity:
    """Scores uploaded photos with the champion; see the README for each endpoint's contract."""

    scorer = bentoml.depends(Scorer)

    def __init__(self) -> None:
        self.metrics = ServiceMetrics(settings.monitoring_dir / "latest.json")
        self.log = RequestLog(settings.monitoring_dir / "requests", settings.drift.log_max_bytes,
                              settings.drift.log_backups)

    def __metrics__(self, content: str) -> str:
        return content + self.metrics.drift_lines()

    def _prepare(self, path: Path) -> Any:
        """Decode one upload and shrink it for the model step."""
        limits = settings.images
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise Rejected("too_large", f"the image is {size} bytes, above the cap of {limits.max_bytes}", 413)
        try:
            img, _ = decode(path.read_bytes(), limits.max_bytes, limits.max_pixels, limits.min_side)
        except ImageError as exc:
            raise Rejected(exc.reason, str(exc), 413 if exc.reason == "too_large" else 400) from exc
        img.thumbnail((SERVING.max_side, SERVING.max_side))
        return img

    async def _score(self, paths: list[Path], social: dict | None = None) -> list[dict]:
        """One result per upload, in order: a prediction, or an ``error`` entry for a bad image."""
        prepared: list[Any] = []
        for path in paths:
            try:
                prepared.append(await anyio.to_thread.run_sync(self._prepare, path))
            except Rejected as exc:
                self.metrics.reject(exc.reason)
                prepared.append(exc)
        good = [i for i, p in enumerate(prepared) if not isinstance(p, Rejected)]
        items = [{"image": prepared[i], "social": social} for i in good]
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
            profile = r.pop("profile")
            self.metrics.observe(r["score"], r["label"], r["version"])
            records.append({"ts": time.time(), "version": r["version"], "score": r["score"], "label": r["label"],
                            **profile})
            results.append({**r, "model_version": r["version"]})
        if records:
            await anyio.to_thread.run_sync(self.log.append, records)
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

    def _count_ok(self, images: list[Path], low: int, high: int) -> JSONResponse | None:
        if not low <= len(images) <= high:
            return self._refuse("image_count", f"send between {low} and {high} images; got {len(images)}")
        return None

    @bentoml.api
    async def predict(self, image: Upload, followers: Count = None, account_age_days: Count = None,
                      posts_per_week: Count = None, tags: Count = None) -> dict:
        """Score one photo (multipart field ``image``), with optional social context."""
        start = time.perf_counter()
        social = {"followers": followers, "account_age_days": account_age_days,
                  "posts_per_week": posts_per_week, "tags": tags}
        (result,) = await self._score([image], social)
        if "error" in result:
            return JSONResponse({"error": result["error"], "message": result["message"]},
                                status_code=result["status"])
        return {**result, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def predict_batch(self, images: list[Upload]) -> dict:
        """Score up to 64 photos (repeated field ``images``): one result each, in order."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 1, SERVING.max_batch_images):
            return refused
        results = await self._score(images)
        return {"results": results, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def compare(self, images: list[Upload]) -> dict:
        """Rank 2–10 photos best first: "which photo should I post?". Ties keep upload order."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 2, SERVING.compare_max_images):
            return refused
        results = await self._score(images)
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
    async def reload(self) -> dict:
        """Pick up the registry's current champion; requests in flight finish on the old one."""
        try:
            return await self.scorer.to_async.reload()
        except Exception as exc:  # the registry is unreachable or has no champion: keep serving the old one
            return JSONResponse({"error": "reload_failed", "message": str(exc)}, status_code=503)

    @web.get("/model")
    async def model(self) -> dict:
        """The champion being served: name, version, alias, family, test metrics, trained_at, snapshot."""
        return await self.scorer.to_async.info()


for guard, options in guards(settings):
    Popularity.add_asgi_middleware(guard, **options)

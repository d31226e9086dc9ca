"""The BentoML service: the public API and web routes in front of the adaptively batched scorer.

``Popularity`` (the public service) authenticates, caps and decodes every upload in a thread
(:mod:`serving.uploads`), so bad input is answered with a 4xx before it reaches the model; the
:class:`~serving.scorer.Scorer` holds the champion and scores the decoded images of concurrent requests
in one batch. The two are separate BentoML services so that decoding (CPU) never waits behind the model
step and the scorer alone asks for the GPU. The request schemas are in :mod:`serving.schemas`.

The API asks the scorer to follow the registry's champion alias at start-up and every
``serving.watch_interval_s``: ``/livez`` answers from the start, ``/readyz`` is 503 with the reason until
a champion is served, and a champion that cannot be loaded shows in ``/readyz`` and ``/metrics``.

Shadow scoring (``serving.shadow_share`` above 0): after answering, a background task hands that share of
the answered images to the scorer's challenger and stores its score beside the champion's under the same
``prediction_id`` (their records wait for it, up to ``SHADOW_TIMEOUT_S``); its failures are counted and
reported, never answered.
"""

from __future__ import annotations

import asyncio
import random
from http import HTTPStatus
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
from bentoml._internal import server as bentoml_server
import pandas as pd
import sqlalchemy as sa
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from starlette.responses import JSONResponse

from monitoring.feedback import record as record_feedback
from monitoring.request_store import SHADOW_PROFILE, BatchWriter, open_request_store
from monitoring.verdicts import VerdictCache, open_verdict_store
from pipelines.data.images import ImageError
from pipelines.settings import load_settings
from serving.client_errors import log_client_errors_in_one_line
from serving.guards import guards
from serving.metrics import ServiceMetrics
from serving.readiness import ReadinessReason, ServingStatus
from serving.schemas import Count, EarlyViews, Outcome, PostId, Tags, Text, Upload
from serving.scorer import Scorer, why
from serving.scorer_calls import UNANSWERED, Coalescing, call_idempotent
from serving.uploads import decode_upload

settings = load_settings()  # the same settings as the scorer's: read once per process
log_client_errors_in_one_line()  # a 4xx is the client's error: one line, no traceback
SERVING = settings.serving
STATIC = Path(__file__).with_name("static")
SWAGGER_UI = Path(bentoml_server.__file__).parent / "static_content"  # BentoML's copy of swagger-ui-dist
STATUS = ServingStatus()  # this API process's view of the scorer: read by /readyz and /metrics

# FastAPI's own /docs would load Swagger UI from a CDN: the API's page is /docs below, on this origin.
web = FastAPI(title="popularity web page", docs_url=None, redoc_url=None, openapi_url=None)
web.mount("/static", StaticFiles(directory=STATIC), name="static")
web.mount("/swagger-ui", StaticFiles(directory=SWAGGER_UI), name="swagger-ui")


@web.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@web.get("/docs", include_in_schema=False)
def docs() -> FileResponse:
    """The OpenAPI spec (/docs.json) in the Swagger UI that BentoML ships, served from here."""
    return FileResponse(STATIC / "docs.html")


RETRY = {"Retry-After": "5"}  # a 503 (no champion yet, the scorer busy) is worth retrying
SHADOW_TIMEOUT_S = 60.0  # a shadowed request's record waits this long at most for the challenger's score


class Rejected(Exception):
    def __init__(self, reason: str, message: str, status: int = 400):
        super().__init__(message)
        self.reason, self.message, self.status = reason, message, status


# No BentoML max_concurrency: its limiter stands outside the guards, so a client trickling its body would
# hold a slot; serving.guards.Admission admits requests once their body is in (max_concurrency per worker).
@bentoml.service(name="popularity", workers=1, traffic={"timeout": 60})
@bentoml.asgi_app(web, path="/")
class Popularity:
    """Scores uploaded photos with the champion; see the README for each endpoint's contract."""

    scorer = bentoml.depends(Scorer)

    def __init__(self) -> None:
        self.metrics = ServiceMetrics()
        # the monitor's latest verdicts, from the store every replica reads (the monitor may run elsewhere)
        self.verdicts = VerdictCache(open_verdict_store(settings), settings.model_name(settings.task))
        store = settings.store
        self.requests = BatchWriter(open_request_store(settings), store.flush_rows, store.flush_interval_s,
                                    store.queue_max_rows)
        self.decoding = asyncio.Semaphore(SERVING.decode_concurrency)
        self.recording = asyncio.Lock()  # one feedback batch at a time: its checks read what the last one stored
        self.in_flight = 0
        self.shadows: set[asyncio.Task] = set()  # shadow scoring in the background (serving.shadow_share)
        self.shadow_skipped = 0
        # concurrent requests share the scorer's calls; with batching off each request makes its own
        calls = SERVING.scorer_calls_in_flight if SERVING.batching else SERVING.max_concurrency
        self.scoring = Coalescing(self._call_scorer, SERVING.max_batch_size, calls,
                                  max_wait_s=UNANSWERED * SERVING.scorer_timeout_s)  # as one call's, inside 60 s

    def __metrics__(self, content: str) -> str:
        shadow = self.metrics.shadow_lines(STATUS, self.shadow_skipped) if SERVING.shadow_share > 0 else ""
        verdicts = self.verdicts
        return (content + self.metrics.drift_lines(verdicts.get("drift"))
                + self.metrics.performance_lines(verdicts.get("performance"), verdicts.get("estimate"))
                + self.metrics.model_lines(STATUS, self.requests.dropped) + shadow)

    @bentoml.on_startup
    async def follow_the_champion(self) -> None:
        """Ask the scorer to follow the registry's alias now and every ``watch_interval_s``."""
        self._watcher = asyncio.create_task(self._watch())
        self._verdicts = asyncio.create_task(self._follow_verdicts())

    async def _follow_verdicts(self) -> None:
        """Read the monitor's latest verdicts (the /metrics gauges) now and every watch interval, on a thread."""
        while True:
            await anyio.to_thread.run_sync(self.verdicts.refresh)
            await asyncio.sleep(SERVING.watch_interval_s if SERVING.watch_interval_s > 0 else 10.0)

    async def _watch(self) -> None:
        # BentoML runs startup hooks before it connects the scorer's proxy, which gains its methods then
        while not hasattr(self.scorer.to_async, "refresh"):
            await asyncio.sleep(0.05)
        while True:
            reached = await self._refresh()
            if reached and SERVING.watch_interval_s <= 0:
                return
            await asyncio.sleep(SERVING.watch_interval_s if reached and SERVING.watch_interval_s > 0 else 1.0)

    async def _refresh(self, force: bool = False) -> bool:
        """Update :data:`STATUS` from the scorer; False when the scorer cannot be reached (yet)."""
        try:
            STATUS.update(await self.scorer.to_async.refresh(force=force))
            return True
        except Exception as exc:
            STATUS.unreachable(why(exc))
            return False

    def _prepare(self, path: Path) -> Any:
        """Decode one upload at the model step's size (:func:`serving.uploads.decode_upload`)."""
        max_bytes = settings.images.max_bytes
        size = path.stat().st_size
        if size > max_bytes:
            raise Rejected("too_large", f"the image is {size} bytes, above the cap of {max_bytes}", 413)
        try:
            img = decode_upload(path.read_bytes(), settings)
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
        results, records, answered = [], [], []
        for i, p in enumerate(prepared):
            if isinstance(p, Rejected):
                results.append({"error": p.reason, "message": p.message, "status": p.status})
                continue
            r = scored[i]
            if "error" in r:  # no champion loaded yet, or the scorer shed the batch
                results.append({**r, "status": 503})
                continue
            profile = r.pop("profile")
            self.metrics.observe(r["score"], r["label"], r["version"])
            ids = {"prediction_id": uuid.uuid4().hex, **({"post_id": post_ids[i]} if post_ids[i] else {})}
            drift_profile = {"profile_rate": profile_rate, **profile} if profile is not None else {}
            records.append({"ts": time.time(), "model": r["model"], "version": r["version"], "score": r["score"],
                            "label": r["label"], **ids, **drift_profile})
            answered.append(prepared[i])
            results.append({**r, "model_version": r["version"], **ids})
        if SERVING.shadow_share > 0:
            records = self._start_shadow(records, answered, social)
        self.requests.submit(records)
        return results

    def _start_shadow(self, records: list[dict], images: list[Any], social: dict | None) -> list[dict]:
        """Draw ``serving.shadow_share`` of the answered records for the challenger and score them in a
        background task, which stores them once scored; returns the records to store now."""
        drawn = [k for k in range(len(records)) if random.random() < SERVING.shadow_share]
        if not drawn:
            return records
        if len(self.shadows) >= SERVING.max_concurrency:  # the challenger lags: never queue without bound
            self.shadow_skipped += len(drawn)
            return records
        task = asyncio.create_task(self._shadow([records[k] for k in drawn],
                                                [{"image": images[k], "social": social,
                                                  "profile": "profile_rate" in records[k]} for k in drawn]))
        self.shadows.add(task)
        task.add_done_callback(self.shadows.discard)
        return [r for k, r in enumerate(records) if k not in set(drawn)]

    async def _shadow(self, records: list[dict], items: list[dict]) -> None:
        """The challenger's scores of answered images, written into their records, which are then
        stored; a failure is counted and reported (``/readyz``, ``/metrics``) and the records stored
        without it."""
        try:
            scored = await asyncio.wait_for(self.scorer.to_async.shadow_score(items), SHADOW_TIMEOUT_S)
            for record, shadow in zip(records, scored, strict=True):
                if "error" not in shadow:  # with the challenger's own profile of a profiled image (its drift view)
                    record.update(shadow_version=shadow["version"], shadow_score=shadow["score"],
                                  **{SHADOW_PROFILE + k: v for k, v in (shadow.get("profile") or {}).items()})
        except Exception as exc:  # the scorer unreachable or too slow: the champion's answers stand
            STATUS.shadow_failures += 1
            STATUS.shadow_problem = f"shadow scoring failed: {why(exc)}"
        finally:
            self.requests.submit(records)

    async def _score_on_scorer(self, items: list[dict]) -> list[dict]:
        """The scorer's results for ``items``, in calls shared with concurrent requests
        (:class:`serving.scorer_calls.Coalescing`) and made again on a dropped connection or a lost reply
        (:func:`serving.scorer_calls.call_idempotent`), or an ``overloaded`` entry each when its batch queue
        shed them (over ``max_latency_ms``) or no reply came: busy, not broken, answered 503 with
        ``Retry-After``."""
        try:
            return await self.scoring(items)
        except TimeoutError:
            self.metrics.reject("scorer_timeout")
            message = f"the scorer did not answer within {SERVING.scorer_timeout_s:.0f} s, twice; retry shortly"
        except BentoMLException as exc:
            if exc.error_code != HTTPStatus.SERVICE_UNAVAILABLE:
                raise
            self.metrics.reject("overloaded")
            message = "the scorer is busy; retry shortly"
        return [{"error": "overloaded", "message": message} for _ in items]

    async def _call_scorer(self, items: list[dict]) -> list[dict]:
        return await call_idempotent(lambda: self.scorer.to_async.score(items), SERVING.scorer_timeout_s)

    def _unavailable(self, message: str) -> JSONResponse:
        self.metrics.reject("store_unavailable")
        return JSONResponse({"error": "store_unavailable", "message": message}, status_code=503,
                            headers={"Retry-After": "10"})

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
                      posts_per_week: Count = None, tags: Tags | None = None, tag_count: Count = None,
                      title: Text | None = None, description: Text | None = None, user_contacts: Count = None,
                      user_groups: Count = None, user_mean_views: Count = None, photo_count: Count = None,
                      post_id: PostId | None = None, daily_views: EarlyViews | None = None) -> dict:
        """Score one photo (multipart field ``image``), with optional social context (seed 002's user
        columns included), the post's words (``tags`` as ``sunset|food``, ``title``, ``description``), the
        cumulative views of its first days when it is already out (a JSON array, read by the nowcast) and
        the caller's ``post_id``; the answer's ``prediction_id`` names it."""
        start = time.perf_counter()
        social = {"followers": followers, "account_age_days": account_age_days, "posts_per_week": posts_per_week,
                  "tags": tags, "tag_count": tag_count, "title": title, "description": description,
                  "user_contacts": user_contacts, "user_groups": user_groups,
                  "user_mean_views": user_mean_views, "photo_count": photo_count,
                  **{f"views_d{d}": v for d, v in enumerate(daily_views or [], start=1)}}
        (result,) = await self._score([image], social, [post_id] if post_id else None)
        if "error" in result:
            return JSONResponse({"error": result["error"], "message": result["message"]},
                                status_code=result["status"], headers=RETRY if result["status"] == 503 else None)
        return {**result, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def predict_batch(self, images: list[Upload], post_ids: list[PostId] | None = None) -> dict:
        """Score up to 64 photos (repeated field ``images``): one result each, in order; ``post_ids`` is
        an optional JSON array of the caller's ids, one per image. When none could be scored because the
        scorer shed them all (or no champion is loaded yet), the answer is one 503 with ``Retry-After``."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 1, SERVING.max_batch_images, post_ids):
            return refused
        results = await self._score(images, post_ids=post_ids)
        if all(r.get("status") == 503 for r in results):  # every image shed (or no champion): the whole batch
            return JSONResponse({"error": results[0]["error"], "message": results[0]["message"]}, status_code=503,
                                headers=RETRY)
        return {"results": results, "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    @bentoml.api
    async def compare(self, images: list[Upload], post_ids: list[PostId] | None = None) -> dict:
        """Rank 2–10 photos best first: "which photo should I post?". Ties keep upload order;
        ``post_ids`` as for ``predict_batch``."""
        start = time.perf_counter()
        if refused := self._count_ok(images, 2, SERVING.compare_max_images, post_ids):
            return refused
        results = await self._score(images, post_ids=post_ids)
        if busy := next((r for r in results if r.get("status") == 503), None):  # no champion, or shed: not the images
            return JSONResponse({"error": busy["error"], "message": busy["message"]}, status_code=503, headers=RETRY)
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
        # answered predictions are known first (shadowed ones once the challenger scored them, or gave up);
        # a store that is down is a 503 with the reason, at once
        if self.shadows:
            await asyncio.wait(set(self.shadows), timeout=SHADOW_TIMEOUT_S)
        if self.requests.problem or not await anyio.to_thread.run_sync(self.requests.flush, 10.0):
            return self._unavailable(f"the request store cannot be written: {self.requests.problem or 'too slow'}")
        frame = pd.DataFrame([row.fields() for row in rows])
        try:
            async with self.recording:
                result = await anyio.to_thread.run_sync(record_feedback, frame, settings)
        except (OSError, sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            return self._unavailable(f"the store cannot be reached: {why(exc)}")
        body = result.summary()
        if not result.accepted:
            return JSONResponse({"error": "feedback_rejected", **body}, status_code=422)
        return body

    @bentoml.api
    async def reload(self) -> dict:
        """Follow the registry's champion now rather than at the next watch; requests in flight finish
        on the old one. 503 with the reason when no champion is loaded or the new one failed to load
        (a version that failed lately is tried again now, not after its backoff)."""
        await self._refresh(force=True)
        if not STATUS.ready or STATUS.problem:
            return JSONResponse({"error": "reload_failed", "message": STATUS.problem, **asdict(STATUS)},
                                status_code=503)
        return await self.scorer.to_async.info()

    @web.get("/model")
    async def model(self) -> dict:
        """The champion being served: name, version, alias, family, test metrics, trained_at, snapshot
        (and with shadow scoring, ``shadow``: the challenger scoring in shadow)."""
        summary = await self.scorer.to_async.info()
        if not summary:
            return JSONResponse({"error": "no_champion", "message": STATUS.problem}, status_code=503)
        return summary


# Wiring, once at import: each route's form fields for the body guard, the guards, then /readyz's reason.
ROUTE_FIELDS = {f"/{name}": tuple(api.input_spec.model_fields) for name, api in Popularity.apis.items()}
for guard, options in guards(settings, ROUTE_FIELDS):
    Popularity.add_asgi_middleware(guard, **options)
Popularity.add_asgi_middleware(ReadinessReason, status=STATUS)

"""/readyz says why, and a champion version that fails to load is tried again with backoff."""

from __future__ import annotations

import asyncio
import json

from serving.readiness import LoadBackoff, ReadinessReason, ServingStatus


def _readyz(status: ServingStatus) -> tuple[int, dict | None]:
    """/readyz through the reason middleware in front of BentoML's probe (200, empty body, when ready)."""

    async def bentoml_probe(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(ReadinessReason(bentoml_probe, status)({"type": "http", "path": "/readyz"}, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if body else None


def test_readyz_shows_a_failed_champion_load_while_the_old_one_serves():
    status = ServingStatus()
    assert _readyz(status) == (503, {"error": "not_ready", "message": "the scorer has not answered yet"})
    status.update({"ready": True, "version": "3", "problem": None, "load_failures": 0})
    assert _readyz(status) == (200, None)  # BentoML's own probe
    problem = "could not load champion v4: no such artifact"
    status.update({"ready": True, "version": "3", "problem": problem, "load_failures": 1})
    assert _readyz(status) == (200, {"ready": True, "version": "3", "problem": problem})


def test_a_shadow_challenger_that_fails_is_shown_and_changes_no_verdict():
    status = ServingStatus()
    status.update({"ready": True, "version": "3", "problem": None, "load_failures": 0, "shadow_version": "4",
                   "shadow_problem": None, "shadow_failures": 0})
    assert _readyz(status) == (200, None)
    problem = "could not load challenger v5 as shadow: no such artifact (next try in 10 s)"
    status.update({"ready": True, "version": "3", "problem": None, "load_failures": 0, "shadow_version": "4",
                   "shadow_problem": problem, "shadow_failures": 1})
    assert _readyz(status) == (200, {"ready": True, "version": "3", "problem": None, "shadow_problem": problem})
    status.update({"ready": False, "version": None, "problem": "no champion", "load_failures": 0,
                   "shadow_problem": problem})
    assert _readyz(status) == (503, {"error": "not_ready", "message": "no champion"})


def test_a_version_that_failed_to_load_is_retried_with_doubling_waits_not_at_every_watch():
    backoff = LoadBackoff(base_s=10.0, max_s=60.0)
    assert backoff.due("4", now=0.0)
    waits = [backoff.failed("4", now=t) for t in (0.0, 10.0, 30.0, 70.0, 130.0)]
    assert waits == [10.0, 20.0, 40.0, 60.0, 60.0]
    assert not backoff.due("4", now=189.0) and backoff.due("4", now=190.0)
    assert backoff.due("5", now=0.0)  # a newer version is tried at once
    backoff.loaded("4")
    assert backoff.due("4", now=0.0) and backoff.failed("4", now=0.0) == 10.0

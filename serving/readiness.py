"""Readiness with a reason: BentoML answers a not-ready ``/readyz`` with a fixed sentence; an operator
(and a Kubernetes event) should read *why*: no champion yet, the registry unreachable, a champion
that failed to load."""

from __future__ import annotations

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

STARTING = "the scorer has not answered yet"


@dataclass
class ServingStatus:
    """What the API process last heard from the scorer."""

    ready: bool = False
    version: str | None = None
    problem: str | None = STARTING
    load_failures: int = 0

    def update(self, status: dict) -> None:
        self.ready, self.version = bool(status["ready"]), status["version"]
        self.problem, self.load_failures = status["problem"], int(status["load_failures"])

    def unreachable(self, why: str) -> None:
        self.problem = f"the scorer cannot be reached: {why}"


class ReadinessReason:
    """``/readyz`` is 503 with ``{"error": "not_ready", "message": <reason>}`` while no champion is
    loaded; once one is, BentoML's own probe (the scorer's ``__is_ready__``) answers."""

    def __init__(self, app: ASGIApp, status: ServingStatus):
        self.app, self.status = app, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/readyz" or self.status.ready:
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "not_ready", "message": self.status.problem or "no champion loaded"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

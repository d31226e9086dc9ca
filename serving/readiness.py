"""Readiness with a reason: BentoML answers a not-ready ``/readyz`` with a fixed sentence; an operator
(and a Kubernetes event) should read *why*: no champion yet, the registry unreachable, a champion
that failed to load."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

STARTING = "the scorer has not answered yet"


@dataclass
class ServingStatus:
    """What the API process last heard from the scorer."""

    ready: bool = False
    version: str | None = None
    problem: str | None = STARTING
    load_failures: int = 0
    gate_warning: str | None = None  # the champion was promoted without the gate (pipelines.review.gate_record)
    # shadow scoring (serving.shadow_share above 0): the challenger held, why it is not, failures so far
    shadow_version: str | None = None
    shadow_problem: str | None = None
    shadow_failures: int = 0

    def update(self, status: dict) -> None:
        self.ready, self.version = bool(status["ready"]), status["version"]
        self.problem, self.load_failures = status["problem"], int(status["load_failures"])
        self.gate_warning = status.get("gate_warning")
        self.shadow_version, self.shadow_problem = status.get("shadow_version"), status.get("shadow_problem")
        self.shadow_failures = int(status.get("shadow_failures", 0))

    def unreachable(self, why: str) -> None:
        self.problem = f"the scorer cannot be reached: {why}"


@dataclass
class LoadBackoff:
    """When to try a champion version that failed to load again: after ``base_s``, doubling with each
    failure up to ``max_s``, rather than at every watch for ever. A version that loads is forgotten."""

    base_s: float
    max_s: float
    failures: dict[str, int] = field(default_factory=dict)
    next_try: dict[str, float] = field(default_factory=dict)

    def due(self, version: str, now: float) -> bool:
        return now >= self.next_try.get(version, 0.0)

    def failed(self, version: str, now: float) -> float:
        """Record a failed load of ``version``; returns the seconds until the next try."""
        self.failures[version] = self.failures.get(version, 0) + 1
        wait = min(self.max_s, self.base_s * 2 ** (self.failures[version] - 1))
        self.next_try[version] = now + wait
        return wait

    def loaded(self, version: str) -> None:
        self.failures.pop(version, None)
        self.next_try.pop(version, None)


class ReadinessReason:
    """``/readyz`` is 503 with ``{"error": "not_ready", "message": <reason>}`` while no champion is
    loaded; once one is, BentoML's own probe (the scorer's ``__is_ready__``) answers, and when a newer
    champion failed to load (the old one still serving) its 200 says so:
    ``{"ready": true, "version": <served>, "problem": <reason>}``, and so does a champion promoted without
    the gate (``"warning"``: the alias was moved by hand). A shadow challenger that cannot load or
    score changes no verdict; the body then carries ``shadow_problem``."""

    def __init__(self, app: ASGIApp, status: ServingStatus):
        self.app, self.status = app, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/readyz":
            return await self.app(scope, receive, send)
        if not self.status.ready:
            body = json.dumps({"error": "not_ready", "message": self.status.problem or "no champion loaded"})
            return await _answer(send, 503, body.encode())
        if not self.status.problem and not self.status.shadow_problem and not self.status.gate_warning:
            return await self.app(scope, receive, send)
        problem = {"ready": True, "version": self.status.version, "problem": self.status.problem}
        if self.status.gate_warning:  # served, but a person moved the alias past the gate: say so
            problem["warning"] = self.status.gate_warning
        if self.status.shadow_problem:
            problem["shadow_problem"] = self.status.shadow_problem

        async def with_the_problem(message) -> None:  # BentoML's verdict, with the reason in the body
            if message["type"] == "http.response.start":
                body = json.dumps({**problem, "ready": message["status"] == 200}).encode()
                await _answer(send, message["status"], body)
            # its own (empty) body is dropped: ours is sent with the start

        await self.app(scope, receive, with_the_problem)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""The API's calls to the scorer. Scoring is idempotent, so a call whose connection dropped, or whose reply
did not come back in time, is made again; a call that still gets no reply is given up well inside BentoML's
60 s traffic timeout, so its caller hears 503 + ``Retry-After`` (busy) rather than a 504."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

T = TypeVar("T")


def _dropped_connection(exc: Exception) -> bool:
    """The keep-alive race: a pooled connection the scorer closed while idle. aiohttp reports it as a
    ``ClientConnectionError``, or, when it hits while the body is read, as ``RuntimeError("Connection closed.")``."""
    return isinstance(exc, aiohttp.ClientConnectionError) or (
        isinstance(exc, RuntimeError) and "Connection closed" in str(exc))


async def call_idempotent(call: Callable[[], Awaitable[T]], timeout_s: float, attempts: int = 3,
                          unanswered: int = 2) -> T:
    """``call()``'s result, made again when its connection dropped (up to ``attempts`` calls in all) or when
    no reply came within ``timeout_s`` (up to ``unanswered`` such waits: on a loaded machine a reply was seen
    lost, the scorer's log showing its answer in 0.1 s while the API waited out its 60 s). Raises
    :class:`TimeoutError` once the waits are spent, and the last connection error once the attempts are."""
    calls = waited = 0
    while True:
        calls += 1
        try:
            return await asyncio.wait_for(call(), timeout_s)
        except TimeoutError:
            waited += 1
            if waited >= unanswered or calls >= attempts:
                raise
        except Exception as exc:
            if not _dropped_connection(exc) or calls >= attempts:
                raise

"""The API's calls to the scorer. Concurrent requests share calls (:class:`Coalescing`). Scoring is
idempotent, so a call whose connection dropped, or whose reply did not come back in time, is made again; a
call that still gets no reply is given up well inside BentoML's 60 s traffic timeout, so its callers hear
503 + ``Retry-After`` (busy) rather than a 504."""

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


UNANSWERED = 2  # waits for a reply before a call is given up


async def call_idempotent(call: Callable[[], Awaitable[T]], timeout_s: float, attempts: int = 3,
                          unanswered: int = UNANSWERED) -> T:
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


class Coalescing:
    """Concurrent requests' items reach the scorer in shared calls (its BentoML batching still forms the
    batches): at most ``max_calls`` calls are in flight, and the items that arrive meanwhile leave
    together, up to ``max_items`` a call, as soon as one comes back. An idle service sends a request's
    items at once, with no added wait; a busy one makes a call per batch rather than per request, so the
    per-call work on both sides (HTTP, BentoML's parsing, tracing, pickling) is shared by the batch:
    about a quarter of the scorer's CPU a request under 32 clients (docs/BENCHMARKS.md).

    ``send(items)`` returns one result per item, in order; its exception reaches every caller whose items
    were in that call. A caller waits ``max_wait_s`` at most in all, queueing included (then
    :class:`TimeoutError`, as from one call); the items of a caller that went away, or whose other items
    failed, are dropped if they have not left yet."""

    def __init__(self, send: Callable[[list], Awaitable[list]], max_items: int, max_calls: int, max_wait_s: float):
        self.send, self.max_items, self.max_calls, self.max_wait_s = send, max_items, max_calls, max_wait_s
        self.waiting: list[tuple[object, asyncio.Future, list[asyncio.Future]]] = []  # item, its answer, its request's
        self.calls: set[asyncio.Task] = set()  # held here: the loop keeps only weak references to tasks

    async def __call__(self, items: list) -> list:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self.waiting.extend((item, future, futures) for item, future in zip(items, futures, strict=True))
        self._send_waiting()
        return list(await asyncio.wait_for(asyncio.gather(*futures), self.max_wait_s))

    def _send_waiting(self) -> None:
        while self.waiting and len(self.calls) < self.max_calls:
            taken = [entry for entry in self.waiting[:self.max_items] if not entry[1].done()]
            del self.waiting[:self.max_items]
            if taken:
                call = asyncio.get_running_loop().create_task(self._call(taken))
                self.calls.add(call)
                call.add_done_callback(self._done)

    def _done(self, call: asyncio.Task) -> None:
        self.calls.discard(call)
        if not call.cancelled():  # cancelled: the event loop is closing, nothing more is sent
            self._send_waiting()

    async def _call(self, taken: list[tuple[object, asyncio.Future, list[asyncio.Future]]]) -> None:
        try:
            results = await self.send([item for item, _, _ in taken])
            if len(results) != len(taken):
                raise RuntimeError(f"the scorer answered {len(results)} results for {len(taken)} items")
        except asyncio.CancelledError:  # the service is stopping: its callers are stopped with it
            for _, future, _ in taken:
                future.cancel()
            raise
        except Exception as exc:
            for _, future, request in taken:
                if not future.done():
                    future.set_exception(exc)
                for other in request:  # the request has failed: its items still waiting are not sent
                    other.cancel()
            return
        for (_, future, _), result in zip(taken, results):
            if not future.done():
                future.set_result(result)

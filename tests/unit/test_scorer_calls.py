"""The API's calls to the scorer (serving/scorer_calls.py): a lost reply is asked again and then given up
well inside BentoML's 60 s traffic timeout; a dropped pooled connection is retried; any other error is
raised at once. Concurrent requests share calls, each answered with its own scores, and a failure or a wait
past the bound reaches only the requests it concerns."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from serving.scorer_calls import Coalescing, call_idempotent

WAIT_S = 0.5  # the bounds below leave a wait's worth of slack: CI shares two cores with training


class FlakyScorer:
    """Answers ``"scored"``, except that the calls numbered in ``lose`` never get a reply and those in
    ``fail`` raise the error given."""

    def __init__(self, lose: set[int] = frozenset(), fail: dict[int, Exception] | None = None):
        self.lose, self.fail, self.calls = lose, fail or {}, 0

    async def score(self) -> str:
        self.calls += 1
        if self.calls in self.lose:
            await asyncio.Event().wait()  # the reply that never comes
        if error := self.fail.get(self.calls):
            raise error
        return "scored"


def _call(scorer: FlakyScorer, timeout_s: float = WAIT_S) -> tuple[str | BaseException, float]:
    start = time.monotonic()
    try:
        result = asyncio.run(call_idempotent(scorer.score, timeout_s))
    except Exception as exc:
        result = exc
    return result, time.monotonic() - start


def test_a_lost_reply_is_asked_again_and_answered():
    scorer = FlakyScorer(lose={1})
    result, took = _call(scorer)
    assert result == "scored" and scorer.calls == 2
    assert WAIT_S <= took < 2 * WAIT_S  # one wait, not two


def test_two_lost_replies_are_given_up_after_two_waits():
    scorer = FlakyScorer(lose={1, 2, 3})
    result, took = _call(scorer)
    assert isinstance(result, TimeoutError) and scorer.calls == 2
    assert 2 * WAIT_S <= took < 3 * WAIT_S  # the service's default: 2 × 20 s, inside BentoML's 60 s


@pytest.mark.parametrize("dropped", [aiohttp.ServerDisconnectedError(), RuntimeError("Connection closed.")])
def test_a_dropped_connection_is_retried_up_to_three_calls(dropped):
    scorer = FlakyScorer(fail={1: dropped, 2: dropped})
    assert _call(scorer)[0] == "scored" and scorer.calls == 3
    scorer = FlakyScorer(fail={1: dropped, 2: dropped, 3: dropped})
    assert _call(scorer)[0] is dropped and scorer.calls == 3


@pytest.mark.parametrize("error", [ValueError("bad batch"), RuntimeError("the model failed")])
def test_any_other_error_is_raised_at_once(error):
    scorer = FlakyScorer(fail={1: error})
    assert _call(scorer)[0] is error and scorer.calls == 1


class RecordingScorer:
    """Scores each item as ``item * 10`` after ``seconds``, recording each call's items; a call holding an
    item in ``bad`` raises."""

    def __init__(self, seconds: float = 0.05, bad: frozenset = frozenset()):
        self.seconds, self.bad, self.calls = seconds, bad, []

    async def score(self, items: list) -> list:
        self.calls.append(list(items))
        await asyncio.sleep(self.seconds)
        if self.bad & set(items):
            raise ValueError(f"bad items {sorted(self.bad & set(items))}")
        return [item * 10 for item in items]


def _requests(coalescing: Coalescing, requests: list[list[int]], cancel: int | None = None) -> list:
    """Each request's answer (or exception), the requests made at once in order; ``cancel``: that request's
    caller goes away at once."""

    async def main() -> list:
        tasks = [asyncio.create_task(coalescing(items)) for items in requests]
        await asyncio.sleep(0)  # every request has queued its items
        if cancel is not None:
            tasks[cancel].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_requests_share_calls_and_each_gets_its_own_scores():
    scorer = RecordingScorer()
    answers = _requests(Coalescing(scorer.score, max_items=8, max_calls=2, max_wait_s=5), [[i] for i in range(12)])
    assert answers == [[i * 10] for i in range(12)]
    # the first two leave at once; the ten that came meanwhile, in two calls of at most eight when those return
    assert scorer.calls == [[0], [1], [2, 3, 4, 5, 6, 7, 8, 9], [10, 11]]


def test_an_idle_service_sends_a_request_at_once_and_requests_stay_whole_in_order():
    scorer = RecordingScorer()
    coalescing = Coalescing(scorer.score, max_items=32, max_calls=2, max_wait_s=5)
    start = time.monotonic()
    assert _requests(coalescing, [[7, 8, 9]]) == [[70, 80, 90]]
    assert time.monotonic() - start < scorer.seconds + WAIT_S and scorer.calls == [[7, 8, 9]]


def test_a_failed_call_fails_only_the_requests_in_it():
    scorer = RecordingScorer(bad=frozenset({3}))
    answers = _requests(Coalescing(scorer.score, max_items=2, max_calls=1, max_wait_s=5), [[0], [1], [2], [3], [4]])
    assert scorer.calls == [[0], [1, 2], [3, 4]]
    assert answers[:3] == [[0], [10], [20]]
    assert all(isinstance(a, ValueError) for a in answers[3:])


def test_a_request_whose_first_photos_failed_sends_no_more():
    scorer = RecordingScorer(bad=frozenset({1}))
    answers = _requests(Coalescing(scorer.score, max_items=2, max_calls=1, max_wait_s=5), [[0], [1, 2, 3]])
    assert answers[0] == [0] and isinstance(answers[1], ValueError)
    assert scorer.calls == [[0], [1, 2]]  # photo 3 would have left in a third call: its request had failed


def test_a_caller_that_went_away_is_not_scored_and_the_others_are():
    scorer = RecordingScorer()
    answers = _requests(Coalescing(scorer.score, max_items=8, max_calls=1, max_wait_s=5), [[0], [1], [2], [3]],
                        cancel=2)
    assert isinstance(answers[2], asyncio.CancelledError)
    assert [answers[i] for i in (0, 1, 3)] == [[0], [10], [30]] and scorer.calls == [[0], [1, 3]]


def test_a_request_queued_behind_unanswered_calls_is_given_up_within_its_wait():
    scorer = FlakyScorer(lose={1, 2, 3})

    async def send(items: list) -> list:
        return [await scorer.score() for _ in items]

    start = time.monotonic()
    answers = _requests(Coalescing(send, max_items=8, max_calls=1, max_wait_s=WAIT_S), [[0], [1]])
    assert all(isinstance(a, TimeoutError) for a in answers)  # queued or in flight: a 503, not the 60 s 504
    assert WAIT_S <= time.monotonic() - start < 2 * WAIT_S

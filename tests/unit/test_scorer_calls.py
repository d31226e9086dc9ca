"""The API's calls to the scorer (serving/scorer_calls.py): a lost reply is asked again and then given up
well inside BentoML's 60 s traffic timeout; a dropped pooled connection is retried; any other error is
raised at once."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from serving.scorer_calls import call_idempotent

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

"""The monitor promotes a challenger that waited for its live outcomes, end to end with a running service
(issue 28, item 3).

With ``POPULARITY_PROMOTION__LIVE_OUTCOMES=N`` the gate refuses a challenger until N of the requests it
scored in shadow have an outcome. ``popularity monitor`` says how far it is (``promotion``: waiting k/N);
once the N are in it runs the gate again by itself: a challenger the outcomes show worse is refused for
good (the verdict on the version, the ``challenger`` alias removed, so the service stops scoring it in
shadow), and one no worse becomes champion, the service answering with it at its next watch, without
starting a retraining on that check. The fixtures and helpers are test_live_rollback's (a quick
``colors-svm`` challenger on the champion's snapshot, a service with ``POPULARITY_SERVING__SHADOW_SHARE=1``)."""

from __future__ import annotations

import time

import httpx
import pytest
from mlflow import MlflowClient

from tests.integration.test_live_rollback import (AUTH, NAME, N, _cli, _model, _outcomes, _photo,  # noqa: F401
                                                  _serve, live_home, live_service)

pytestmark = pytest.mark.integration


def _alias(registry: MlflowClient, alias: str) -> str | None:
    found = registry.get_registered_model(NAME).aliases
    return None if alias not in found else str(found[alias])


def test_the_monitor_says_a_challenger_waits_then_refuses_it_for_good_on_worse_outcomes(live_home, live_service):
    home, champion, challenger = live_home
    registry = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    with httpx.Client(base_url=live_service.url, headers=AUTH, timeout=300) as client:
        model = _model(client)
        assert str(model["version"]) == champion and model["shadow"]["version"] == challenger
        records = _serve(client, home, seed=51)
        _outcomes(client, records[: N // 2], favour="served")  # half of the outcomes the gate asks for

        waiting = _cli(home, "monitor", "--no-retrain")["promotion"]
        assert waiting["state"] == "waiting" and waiting["version"] == challenger, waiting
        assert (waiting["outcomes"], waiting["needed"]) == (N // 2, N)
        assert f"waits for {N} live outcomes (have {N // 2})" in waiting["message"]
        assert _alias(registry, "challenger") == challenger and _alias(registry, "champion") == champion

        _outcomes(client, records[N // 2:], favour="served")  # the other half: the champion ranks them better
        refused = _cli(home, "monitor", "--no-retrain")["promotion"]
        assert refused["state"] == "refused" and refused["version"] == challenger, refused
        assert refused["checks"]["live_outcomes"] is False and refused["numbers"]["live_high"] < 0
        assert "worse on live outcomes: difference -" in refused["reason"]
        assert "refused for good" in refused["message"]
        assert _alias(registry, "champion") == champion and _alias(registry, "challenger") is None
        version = registry.get_model_version(NAME, challenger)
        assert version.tags["live_verdict"] == "refused" and version.tags["gate"] == "failed"
        assert "worse on live outcomes" in version.tags["live_verdict_reason"]
        assert "## Refused on live evidence" in version.description

        assert _model(client)["shadow"]["version"] is None  # nothing left to score in shadow
        again = _cli(home, "monitor", "--no-retrain")  # not judged again
        assert again["promotion"] is None and _alias(registry, "champion") == champion


def test_the_monitor_promotes_a_challenger_no_worse_once_its_outcomes_are_in(live_home, live_service):
    home, champion, _ = live_home
    registry = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    if _alias(registry, "champion") != champion:
        pytest.skip("needs the champion the module started with")
    snapshot = registry.get_model_version(NAME, champion).tags["snapshot"]
    trained = _cli(home, "train", snapshot, "--models", "colors-svm", "--quick")  # a new challenger
    challenger = str(trained["registered"]["version"])
    assert _alias(registry, "challenger") == challenger != champion
    with httpx.Client(base_url=live_service.url, headers=AUTH, timeout=300) as client:
        assert _model(client)["shadow"]["version"] == challenger
        _outcomes(client, _serve(client, home, seed=52), favour="shadow")  # the challenger ranks them better

        # retraining allowed: the champion's own outcomes decayed, but the promotion wins on this check
        checked = _cli(home, "monitor")
        promoted = checked["promotion"]
        assert promoted["state"] == "promoted" and promoted["version"] == challenger, promoted
        assert promoted["outcomes"] == N and promoted["checks"]["live_outcomes"] is True
        assert promoted["numbers"]["live_low"] > 0 and f"promoted to champion in place of v{champion}" in \
            promoted["message"]
        assert not checked["retrain_triggered"] and checked["retraining"] is None
        assert _alias(registry, "champion") == challenger and _alias(registry, "previous") == champion

        deadline = time.monotonic() + 120  # the service follows the alias at its watch, without /reload
        while str((model := client.get("/model").json())["version"]) != challenger and time.monotonic() < deadline:
            time.sleep(2)
        assert str(model["version"]) == challenger, model
        answer = client.post("/predict", files={"image": ("a.jpg", _photo(home))})
        assert answer.status_code == 200 and str(answer.json()["version"]) == challenger


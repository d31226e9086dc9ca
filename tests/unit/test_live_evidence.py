"""Promotion and rollback on live evidence (issue 28, item 3): the gate's ``live_outcomes`` check reads the
paired comparison of the challenger in shadow; after a promotion the replaced champion is watched in
shadow (``previous`` alias, ``watch_until``) and a rollback is due when it beat the new champion on the
same outcomes by more than the decay margin; a rollback records itself on both versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from monitoring import shadow
from pipelines import promotion, registry
from pipelines.settings import PerformanceSettings, PromotionSettings, Settings
from tests.unit.test_shadow import CHAMPION, _outcomes, _served, _stream

NAME = "popularity-binary"


def _compared(champion_noise: float, shadow_noise: float, n: int = 300, seed: int = 7) -> shadow.ShadowResult:
    p, s, ratio = _stream(np.random.default_rng(seed), n, champion_noise, shadow_noise)
    served = _served(p, s)
    return shadow.compare(served, _outcomes(served, ratio), CHAMPION, "binary", PerformanceSettings(window=200))


def test_the_live_check_waits_for_its_outcomes_then_refuses_a_worse_challenger_with_the_interval():
    waiting = promotion.live_check(40, None)
    assert not waiting.passed and waiting.message == "waiting for 40 live outcomes (have 0)"
    worse = _compared(0.05, 0.6).summary()
    assert worse["verdict"] == shadow.WORSE and worse["outcomes"] == 200
    few = promotion.live_check(250, worse)
    assert not few.passed and few.message == "waiting for 250 live outcomes (have 200)"
    refused = promotion.live_check(200, worse)
    assert not refused.passed
    assert refused.message == (f"worse on live outcomes: difference {worse['difference']:+.3f} "
                               f"[{worse['low']:+.3f}, {worse['high']:+.3f}] on 200 live outcomes")
    assert worse["high"] < 0 and refused.challenger == worse["challenger"] and refused.champion == worse["champion"]


def test_the_live_check_passes_a_challenger_no_worse_and_waits_without_a_verdict():
    better = _compared(0.6, 0.05).summary()
    assert better["verdict"] == shadow.BETTER and promotion.live_check(50, better).passed
    same = {**better, "challenger": better["champion"], "difference": 0.0, "low": 0.0, "high": 0.0,
            "verdict": shadow.NO_DIFFERENCE}
    assert promotion.live_check(50, same).passed
    undecided = {**better, "verdict": shadow.TOO_FEW}  # enough outcomes, but one class only: no interval
    check = promotion.live_check(50, undecided)
    assert not check.passed and check.message.startswith("waiting for 50 live outcomes (have 200); no verdict")


def test_a_refusal_on_live_outcomes_reads_in_the_gates_reason():
    result = promotion.GateResult(False, "3", "2", [promotion.Check("floor", True, 0.8, 0.6),
                                                   promotion.live_check(40, {"outcomes": 12, "verdict": "too few"})])
    assert result.reason.startswith("not promoted: failed live_outcomes")
    assert "live_outcomes: waiting for 40 live outcomes (have 12)" in result.reason


def test_live_outcomes_off_is_loosened_and_the_watch_is_no_threshold():
    assert promotion.loosened_thresholds(PromotionSettings()) == {}
    assert promotion.loosened_thresholds(PromotionSettings(live_outcomes=100, rollback_watch_hours=0)) == {}
    with pytest.raises(ValueError):
        PromotionSettings(live_outcomes=-1)


@pytest.mark.parametrize(("margin", "verdict"), [(0.05, shadow.ROLLBACK), (0.9, shadow.BETTER)])
def test_a_rollback_is_due_only_when_the_previous_champion_wins_by_more_than_the_margin(margin, verdict):
    compared = _compared(0.6, 0.05)  # the shadow (here the previous champion) far better than the champion
    assert compared.verdict == shadow.BETTER and compared.low > 0.05
    watched = shadow.watch(compared, margin)
    assert watched.role == shadow.PREVIOUS and watched.verdict == verdict
    assert watched.message.startswith("previous champion v2 in shadow of champion v1")
    assert watched.message.endswith(": rollback") == (verdict == shadow.ROLLBACK)
    assert shadow.watch(_compared(0.05, 0.6), 0.0).verdict == shadow.WORSE  # the new champion is the better one


@pytest.fixture
def registered(tmp_path):
    """A registered model with three versions (no model files: the registry only)."""
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = registry.client(settings)
    c.create_registered_model(NAME)
    for k in range(3):
        c.create_model_version(NAME, str(tmp_path / f"v{k + 1}"), tags={"metrics": "{}"},
                               description=f"model card of v{k + 1}")
    return settings, c


def test_the_previous_champion_is_shadowed_while_watched_then_the_challenger(registered):
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_registered_model_alias(NAME, "challenger", "3")
    assert registry.shadow_target(c, NAME) == ("challenger", "3")
    registry.watch_previous(c, NAME, "1", hours=2)
    assert registry.shadow_target(c, NAME) == ("previous", "1")  # the watch comes first
    until = datetime.fromisoformat(c.get_model_version(NAME, "1").tags["watch_until"])
    assert timedelta(hours=1.9) < until - datetime.now(UTC) <= timedelta(hours=2)
    c.set_model_version_tag(NAME, "1", "watch_until", (datetime.now(UTC) - timedelta(seconds=1)).isoformat())
    assert registry.watched_previous(c, NAME, "2") is None and registry.shadow_target(c, NAME) == ("challenger", "3")
    registry.watch_previous(c, NAME, "1", hours=0)  # no watch: the alias goes
    assert registry.alias_version(c, NAME, "previous") is None
    c.set_registered_model_alias(NAME, "challenger", "2")
    assert registry.shadow_target(c, NAME) is None  # the challenger is the champion: nothing in shadow


def test_a_rollback_restores_the_previous_champion_and_records_the_numbers_on_both(registered):
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_model_version_tag(NAME, "2", "previous_champion", "1")
    registry.watch_previous(c, NAME, "1", hours=48)
    numbers = {"outcomes": 60, "champion": 0.61, "previous": 0.93, "difference": 0.32, "low": 0.2, "high": 0.45}
    assert registry.rollback("binary", settings, "worse on live outcomes", numbers) == "1"
    assert str(registry.alias_version(c, NAME, "champion")) == "1" and registry.alias_version(c, NAME, "previous") is None
    demoted, restored = c.get_model_version(NAME, "2"), c.get_model_version(NAME, "1")
    assert demoted.tags["gate"] == "rolled_back" and demoted.tags["rolled_back_to"] == "1"
    assert restored.tags["restored_from"] == "2"
    for version in (demoted, restored):
        assert version.tags["rollback_reason"] == "worse on live outcomes"
        assert json.loads(version.tags["rollback_numbers"]) == numbers
        assert version.description.startswith(f"model card of v{version.version}")  # the card stays, and grows
        assert "## Rollback" in version.description and "worse on live outcomes" in version.description
    with pytest.raises(LookupError, match="replaced no earlier champion"):
        registry.rollback("binary", settings)


@pytest.mark.parametrize("challenger", ["2", "3"])
def test_the_version_rolled_back_from_is_no_longer_the_challenger(registered, challenger):
    """A promotion leaves the ``challenger`` alias on the new champion: after a rollback it would be shadowed
    again, judged again by the monitor and promoted again by ``popularity promote``. The rollback removes the
    alias from it and its card says so; a newer challenger (a retraining's since) keeps it."""
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_registered_model_alias(NAME, "challenger", challenger)
    c.set_model_version_tag(NAME, "2", "previous_champion", "1")
    registry.watch_previous(c, NAME, "1", hours=48)
    registry.rollback("binary", settings, "worse on live outcomes")
    demoted = c.get_model_version(NAME, "2")
    if challenger == "2":
        assert registry.alias_version(c, NAME, "challenger") is None and registry.shadow_target(c, NAME) is None
        assert demoted.tags["gate"] == "rolled_back" and demoted.tags["rollback_reason"] == "worse on live outcomes"
        assert "The `challenger` alias was removed" in demoted.description
        with pytest.raises(LookupError, match="no challenger"):
            promotion.gate("binary", settings)
    else:
        assert registry.shadow_target(c, NAME) == ("challenger", "3")
        assert "alias was removed" not in demoted.description

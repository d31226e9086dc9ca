"""The monitor's side of ``promotion.live_outcomes`` (issue 28, item 3): which challenger waits for its live
outcomes and may be judged (monitoring.monitor.waiting_challenger), and a challenger refused for good on them
(registry.retire_challenger). The judging itself, against a running service, is in
tests/integration/test_live_promotion.py."""

from __future__ import annotations

from mlflow import MlflowClient

from monitoring import monitor
from pipelines import registry
from tests.unit.test_live_evidence import NAME, registered  # noqa: F401  (the fixture)


def _live(settings, n: int = 40):
    return settings.model_copy(update={"promotion": settings.promotion.model_copy(update={"live_outcomes": n})})


def test_a_challenger_waits_for_its_live_outcomes_and_only_while_the_setting_asks_for_them(registered):  # noqa: F811
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_registered_model_alias(NAME, "challenger", "3")
    assert monitor.waiting_challenger("binary", settings) is None  # live_outcomes 0: the gate never waits
    waiting = monitor.waiting_challenger("binary", _live(settings))
    assert waiting["state"] == monitor.WAITING and (waiting["version"], waiting["champion_version"]) == ("3", "2")
    assert (waiting["outcomes"], waiting["needed"]) == (0, 40)  # no request scored in shadow yet
    assert waiting["message"] == "challenger v3 against champion v2 waits for 40 live outcomes (have 0)"


def test_the_watch_of_the_replaced_champion_holds_the_shadow_slot(registered):  # noqa: F811
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_registered_model_alias(NAME, "challenger", "3")
    registry.watch_previous(c, NAME, "1", hours=2)
    waiting = monitor.waiting_challenger("binary", _live(settings))
    assert waiting["state"] == monitor.WAITING and "the replaced champion v1 is watched" in waiting["message"]
    c.set_model_version_tag(NAME, "3", "gate", "pending")  # a person is asked: not judged again meanwhile
    assert monitor.waiting_challenger("binary", _live(settings))["state"] == monitor.PENDING


def test_nothing_waits_without_a_challenger_besides_the_champion_or_after_a_final_verdict(registered):  # noqa: F811
    settings, c = registered
    live = _live(settings)
    assert monitor.waiting_challenger("binary", live) is None  # no champion
    c.set_registered_model_alias(NAME, "champion", "2")
    assert monitor.waiting_challenger("binary", live) is None  # no challenger
    c.set_registered_model_alias(NAME, "challenger", "2")
    assert monitor.waiting_challenger("binary", live) is None  # the challenger is the champion
    c.set_registered_model_alias(NAME, "challenger", "1")
    c.set_model_version_tag(NAME, "1", "gate", "rolled_back")  # demoted by a rollback: judged by hand only
    assert monitor.waiting_challenger("binary", live) is None
    c.set_registered_model_alias(NAME, "challenger", "3")
    assert monitor.waiting_challenger("binary", live)["version"] == "3"


def test_a_challenger_refused_for_good_records_it_and_loses_its_alias(registered):  # noqa: F811
    settings, c = registered
    c.set_registered_model_alias(NAME, "champion", "2")
    c.set_registered_model_alias(NAME, "challenger", "3")
    assert registry.retire_challenger(c, NAME, "3", "worse on live outcomes: difference -0.3 [-0.4, -0.2]")
    assert registry.alias_version(c, NAME, "challenger") is None
    assert registry.shadow_target(c, NAME) is None  # no service scores it in shadow any more
    refused = MlflowClient(settings.mlflow_tracking_uri).get_model_version(NAME, "3")
    assert refused.tags["live_verdict"] == "refused" and refused.tags["live_verdict_reason"].startswith("worse on")
    assert refused.description.startswith("model card of v3") and "## Refused on live evidence" in refused.description
    c.set_registered_model_alias(NAME, "challenger", "3")  # put back by hand: still not judged again
    assert monitor.waiting_challenger("binary", _live(settings)) is None
    c.set_registered_model_alias(NAME, "challenger", "1")  # another challenger now: its alias is not touched
    assert not registry.retire_challenger(c, NAME, "3", "again")
    assert str(registry.alias_version(c, NAME, "challenger")) == "1"

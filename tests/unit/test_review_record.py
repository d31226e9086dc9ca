"""A champion promoted past the gate is told apart from a gated one (pipelines/review.py), and the service's
/readyz and /metrics say so; the approval's decision reads as what happened; the chart's series holds one
row per version with what each recorded (issue 26)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipelines import review
from serving.metrics import ServiceMetrics
from serving.readiness import ServingStatus
from tests.unit.test_readiness import _readyz


@pytest.mark.parametrize(("tags", "why"), [
    ({}, "has no gate record"),
    ({"gate": "failed", "gate_reason": "not promoted: failed floor"}, "was refused by the gate (not promoted: failed floor"),
    ({"gate": "pending"}, "still awaits a person's approval"),
    ({"gate": "rolled_back"}, "was rolled back"),
])
def test_a_champion_without_the_gates_pass_is_reported_with_why(tags, why):
    record = review.gate_record("7", tags)
    assert record["promoted_without_gate"] is True and record["gate"] == tags.get("gate")
    assert why in record["gate_warning"] and "v7" in record["gate_warning"]
    assert "Promote model" in record["gate_warning"] and "popularity promote --rollback" in record["gate_warning"]


def test_a_gated_champion_is_not_reported():
    assert review.gate_record("3", {"gate": "passed", "approval": "approved"}) == {
        "gate": "passed", "promoted_without_gate": False, "gate_warning": None}


def test_readyz_and_metrics_show_a_champion_promoted_without_the_gate():
    status = ServingStatus()
    status.update({"ready": True, "version": "3", "problem": None, "load_failures": 0, "gate_warning": None})
    assert _readyz(status) == (200, None)
    assert "popularity_model_promoted_without_gate 0.0" in ServiceMetrics.model_lines(status, 0)
    warning = review.gate_record("4", {})["gate_warning"]
    status.update({"ready": True, "version": "4", "problem": None, "load_failures": 0, "gate_warning": warning})
    assert _readyz(status) == (200, {"ready": True, "version": "4", "problem": None, "warning": warning})
    assert "popularity_model_promoted_without_gate 1.0" in ServiceMetrics.model_lines(status, 0)


@pytest.mark.parametrize(("outcome", "reason", "approved", "message"), [
    (review.APPROVED, "signed", True, "approved by a person: signed"),
    (review.REJECTED, "", False, "rejected by a person"),
    (review.TIMED_OUT, "60 s passed without an answer", False, "no approval within the timeout: 60 s passed"),
])
def test_a_decision_reads_as_what_happened(outcome, reason, approved, message):
    decision = review.Decision(outcome, reason)
    assert decision.approved is approved and decision.message.startswith(message)


class _Version:
    def __init__(self, version, **tags):
        self.version, self.tags = str(version), {k: json.dumps(v) if isinstance(v, dict) else v for k, v in tags.items()}


class _Registry:
    def __init__(self, versions):
        self.versions = versions

    def search_model_versions(self, query):
        return list(reversed(self.versions))  # the registry's order is not the chart's


def test_the_series_has_one_row_per_version_oldest_first_with_what_each_recorded():
    from pipelines import version_chart

    versions = [_Version(1, candidate="stats-gb", selection={"value": 0.7}, metrics={"roc_auc": 0.68},
                         baseline={"roc_auc": 0.5}, oracle={"roc_auc": 0.9}, gate="passed"),
                _Version(2, candidate="cnn", selection={"value": 0.8}, metrics={"roc_auc": 0.79}, gate="failed"),
                _Version(10)]  # registered by hand: nothing recorded, still a point on the axis
    frame = version_chart.series(_Registry(versions), "popularity-binary", "roc_auc", champion="1")
    assert frame["version"].tolist() == [1, 2, 10]
    assert frame["champion"].tolist() == [True, False, False]
    assert frame.loc[0, ["validation", "test", "baseline", "oracle"]].tolist() == [0.7, 0.68, 0.5, 0.9]
    assert pd.isna(frame.loc[1, "baseline"]) and pd.isna(frame.loc[2, "test"])  # missing, never made up
    png = version_chart.plot(frame, "popularity-binary", "roc_auc")
    assert png.startswith(b"\x89PNG")

"""Alerting: the Prometheus rules in deploy/ name only series the service exposes and pass promtool; the
Prefect automations cover drift, decay, a refused or failed retraining, a rollback and a stuck flow run,
and exist only when a webhook is configured (tests/integration/test_alerts.py sends one for real)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from flows import alerts
from pipelines.settings import Settings
from serving.metrics import ServiceMetrics
from serving.readiness import ServingStatus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _exposed(tmp_path: Path) -> set[str]:
    """Every series name the service's /metrics can show: its gauge text, its counters and histogram, and
    BentoML's request counter."""
    text = (ServiceMetrics.drift_lines(SimpleNamespace(drift_file=tmp_path / "none.json"))
            + ServiceMetrics.performance_lines(tmp_path / "none.json")
            + ServiceMetrics.model_lines(ServingStatus(ready=True, version="1"), 0))
    names = {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")}
    source = (REPO / "serving" / "metrics.py").read_text()
    for kind, name in re.findall(r'\b(Counter|Histogram)\("(\w+)"', source):
        names |= {f"{name}_total"} if kind == "Counter" else {f"{name}_{s}" for s in ("bucket", "sum", "count")}
    import _bentoml_impl.server.app as app
    import bentoml._internal.server.http.instruments as instruments

    assert 'namespace="bentoml_service"' in Path(app.__file__).read_text()
    assert 'name="request_total"' in Path(instruments.__file__).read_text()
    return names | {"bentoml_service_request_total"}


def test_every_rule_names_only_series_the_service_exposes(tmp_path):
    exposed = _exposed(tmp_path)
    used = set()
    for rule in _rules():
        assert rule["alert"].startswith("Popularity") and rule["labels"]["severity"] in ("warning", "critical")
        names = set(re.findall(r"\b((?:popularity|bentoml)_\w+)\b", rule["expr"]))
        assert names and names <= exposed, (rule["alert"], names - exposed)
        used |= names
    assert {"popularity_drift", "popularity_decay", "popularity_realized_metric_high", "popularity_model_problem",
            "popularity_model_ready", "popularity_model_load_failures_total", "bentoml_service_request_total",
            "popularity_rejected_inputs_total"} <= used


def test_promtool_accepts_the_rules():
    if shutil.which("promtool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus provides it)")
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_the_automations_cover_every_alert_the_issue_names():
    expected = {a.name: a.expect for a in alerts.ALERTS}
    assert expected["drift"] == {alerts.DRIFT} and expected["decay"] == {alerts.DECAY}
    assert expected["rollback"] == {alerts.ROLLBACK}
    assert expected["retrain refused"] == {"prefect.flow-run.Refused"}  # the state retrain_flow ends in
    assert {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"} <= expected["flow run failed"]
    stuck = alerts._trigger(next(a for a in alerts.ALERTS if a.stuck), timedelta(minutes=15))
    assert stuck.posture == "Proactive" and stuck.after == {"prefect.flow-run.heartbeat"}
    assert stuck.within == timedelta(minutes=15) and stuck.for_each == {"prefect.resource.id"}
    refused = alerts._trigger(next(a for a in alerts.ALERTS if a.name == "retrain refused"), timedelta(minutes=15))
    assert refused.posture == "Reactive" and refused.match_related.get("prefect.resource.name") == ["retrain"]


def test_the_webhook_comes_from_the_environment_http_only(monkeypatch):
    monkeypatch.setenv("POPULARITY_ALERTS__WEBHOOK_URL", "https://hooks.example.com/T0/abc")
    assert Settings().alerts.webhook_url.get_secret_value() == "https://hooks.example.com/T0/abc"
    assert "abc" not in repr(Settings().alerts)  # a token in the URL stays out of logs
    monkeypatch.setenv("POPULARITY_ALERTS__WEBHOOK_URL", " ")
    assert Settings().alerts.webhook_url is None and alerts.register_alerts(Settings()) == []
    monkeypatch.setenv("POPULARITY_ALERTS__WEBHOOK_URL", "file:///etc/passwd")
    with pytest.raises(ValueError, match="http"):
        Settings()

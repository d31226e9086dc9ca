"""A review a person can sign (issue 26): the chart of the primary metric across every version and the gate's
numbers as columns on the parent run, the promote flow paused for a person's approval in Prefect (approved,
rejected, unanswered), and a champion alias moved past the gate (MLflow's own button) reported by the
registry, ``popularity model`` and the service. Real MLflow (sqlite), a real Prefect server, real models."""

from __future__ import annotations

import contextvars
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest
from PIL import Image

from flows.training_flows import open_parent_run
from ops.processes import ServiceProcess
from pipelines import promotion, registry, version_chart
from pipelines.settings import Settings, get_settings
from pipelines.training.report import summarise
from pipelines.training.runs import train_candidate
from tests.component.tiny import tiny_data

ROOT = Path(__file__).resolve().parents[2]
NAME = "popularity-binary"
# Two quick models on 100 demo images need not pass the production floor, tolerances and margin: the gate's
# own checks have their tests (test_registry); here every challenger passes unless a person says otherwise.
LOOSE = {"POPULARITY_PROMOTION__FLOOR_ROC_AUC": "0", "POPULARITY_PROMOTION__FLIP_TOLERANCE": "100",
         "POPULARITY_PROMOTION__JPEG_TOLERANCE": "100", "POPULARITY_PROMOTION__LATENCY_BUDGET_MS": "5000",
         "POPULARITY_PROMOTION__MARGIN": "-1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("review") / "home"
    data, _ = tiny_data(home)
    parent = open_parent_run(data.settings, "retrain-manual", {"trigger": "manual", "task": "binary"})
    candidates = {n: train_candidate(n, data, parent, quick=True) for n in ("colors-svm", "stats-gb")}
    summarise(data, list(candidates.values()), parent)  # what train_flow logs on the parent
    return data, candidates, parent


@pytest.fixture
def env(trained, monkeypatch, prefect_api):
    """The entry points' settings (``load_settings``) on this module's home, with the loosened gate, and the
    flows run here reporting to the session's Prefect server (Prefect read its settings when imported)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    data = trained[0]
    for key, value in {"POPULARITY_HOME": str(data.settings.root),
                       "MLFLOW_TRACKING_URI": data.settings.tracking_uri, **LOOSE}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    mlflow.set_tracking_uri(data.settings.tracking_uri)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        yield monkeypatch
    get_settings.cache_clear()


def _challenge(trained, name: str) -> str:
    data, candidates, _ = trained
    return str(registry.register_challenger(candidates[name], "binary", data.snapshot.id, {}, {"roc_auc": 0.9},
                                            data.settings).version)


def _champion(settings) -> str | None:
    version = registry.alias_version(registry.client(settings), NAME, registry.CHAMPION)
    return None if version is None else str(version)


def test_every_decision_charts_all_versions_and_fills_the_parent_columns(trained, env):
    data, candidates, parent = trained
    settings = get_settings()
    c = registry.client(settings)
    for name in ("colors-svm", "stats-gb"):
        version = _challenge(trained, name)
        result = promotion.promote("binary", settings)
        series = mlflow.artifacts.load_dict(f"runs:/{parent}/versions/roc_auc.json")
        registered = {str(v.version): v for v in c.search_model_versions(f"name = '{NAME}'")}
        # one point per registered version, this one included, and the champion marked where the alias is
        assert sorted(str(row["version"]) for row in series["versions"]) == sorted(registered, key=int)
        assert [str(row["version"]) for row in series["versions"] if row["champion"]] == [_champion(settings)]
        row = next(row for row in series["versions"] if str(row["version"]) == version)
        assert row["candidate"] == name and row["gate"] == ("passed" if result.passed else "failed")
        assert row["test"] == pytest.approx(candidates[name].metrics["roc_auc"])
        assert row["validation"] == pytest.approx(candidates[name].validation["roc_auc"])
        assert row["oracle"] == 0.9 and row["baseline"] is None  # recorded where it was, missing where not
        png = mlflow.artifacts.download_artifacts(run_id=parent, artifact_path="versions/roc_auc.png")
        with Image.open(png) as chart:
            assert chart.format == "PNG" and chart.width >= 600
        # the gate's numbers as metric columns of the parent run, beside the chosen candidate's
        metrics = c.get_run(parent).data.metrics
        assert metrics["promoted"] == float(result.passed)
        assert metrics["gate_roc_auc"] == pytest.approx(result.numbers["challenger_roc_auc"])
        assert {"val_roc_auc", "test_roc_auc", "baseline_roc_auc"} <= set(metrics)
        card = c.get_model_version(NAME, version).description
        assert "## Across versions" in card and "versions/roc_auc.png" in card and parent in card
    assert c.get_run(parent).info.run_name.startswith("retrain-manual-20")


def test_the_chart_draws_what_its_series_holds(trained, env):
    """The series behind the chart is what the registry holds, and the PNG changes with it."""
    settings = get_settings()
    c = registry.client(settings)
    _challenge(trained, "stats-gb")
    frame = version_chart.series(c, NAME, "roc_auc", _champion(settings))
    assert frame["version"].is_monotonic_increasing and frame["champion"].sum() == (_champion(settings) is not None)
    one = version_chart.plot(frame, NAME, "roc_auc")
    other = version_chart.plot(frame.iloc[:-1], NAME, "roc_auc")
    assert one.startswith(b"\x89PNG") and Image.open(io.BytesIO(one)).format == "PNG" and one != other


def _run_tagged(tag: str, paused: bool = True, timeout_s: float = 120):
    """The promote flow run tagged ``tag`` (once Prefect shows it paused)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=5,
                                         sort=FlowRunSort.START_TIME_DESC)  # no sort: a 422 from Prefect 3.8.8
            found = [r for r in runs if r.state and (r.state.is_paused() or not paused)]
            if found:
                return found[0]
            time.sleep(0.5)
    raise AssertionError(f"no flow run tagged {tag} paused within {timeout_s} s")


def _promote_flow_with(tag: str, answer: dict | None, seen: dict) -> dict:
    """Run the promote flow here (it blocks while paused); a second thread answers as a person would in the
    UI, through Prefect's client, and keeps what the paused run showed (no ``answer``: nobody answers)."""
    from prefect import tags
    from prefect.client.orchestration import get_client
    from prefect.flow_runs import resume_flow_run

    from flows.training_flows import promote_flow

    def person():
        try:
            run = _run_tagged(tag)
            keyset = run.state.state_details.run_input_keyset
            with get_client(sync_client=True) as client:
                seen["description"] = json.loads(client.read_flow_run_input(run.id, keyset["description"]))
                seen["schema"] = json.loads(client.read_flow_run_input(run.id, keyset["schema"]))
            seen["run_id"] = run.id
            if answer is not None:
                resume_flow_run(run.id, run_input=answer)
        except BaseException as exc:  # shown by the test, not lost in a thread
            seen["error"] = exc

    helper = threading.Thread(target=contextvars.copy_context().run, args=(person,), daemon=True)  # the settings
    if answer is not None:
        helper.start()
    with tags(tag):
        summary = promote_flow(task="binary")
    if answer is not None:
        helper.join(timeout=130)
        assert "error" not in seen, seen.get("error")
    else:
        seen["run_id"] = _run_tagged(tag, paused=False).id
    return summary


def _flow_run_states(run_id) -> list:
    """The run's states, oldest first."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sorted(client.read_flow_run_states(run_id), key=lambda state: state.timestamp)


def _awaiting_approval(trained, env, timeout_s: int) -> tuple[Settings, str | None, str]:
    """Approval required (a person has ``timeout_s`` to answer), a champion the gate alone promoted (no approver
    asked), and a challenger to ask about: (the settings, that champion, the challenger)."""
    env.setenv("POPULARITY_PROMOTION__APPROVAL", "required")
    env.setenv("POPULARITY_PROMOTION__APPROVAL_TIMEOUT_S", str(timeout_s))
    get_settings.cache_clear()
    settings = get_settings()
    _challenge(trained, "colors-svm")
    promotion.promote("binary", settings)
    return settings, _champion(settings), _challenge(trained, "stats-gb")


def test_with_approval_required_the_flow_pauses_and_promotes_once_approved(trained, env):
    settings, before, version = _awaiting_approval(trained, env, 300)
    seen: dict = {}
    summary = _promote_flow_with(f"review-{uuid.uuid4().hex[:8]}", {"approve": True, "reason": "signed by QA"}, seen)
    # the form showed the card's summary: version, metrics, the gate's checks
    assert f"Approve {NAME} v{version}" in seen["description"]
    for heading in ("## Metrics", "## Gate", "beats_champion", "Awaiting a person's approval"):
        assert heading in seen["description"]
    assert {"approve", "reason"} <= set(seen["schema"]["properties"])
    assert summary["promoted"] and summary["checks"]["approval"], summary["reason"]
    assert _champion(settings) == version != before
    tags = registry.client(settings).get_model_version(NAME, version).tags
    assert tags["gate"] == "passed" and tags["approval"] == "approved" and tags["approval_reason"] == "signed by QA"
    card = registry.client(settings).get_model_version(NAME, version).description
    assert "**Promoted to champion.**" in card and "approved by a person: signed by QA" in card
    history = _flow_run_states(seen["run_id"])
    assert [s.type.value for s in history][-3:] == ["PAUSED", "RUNNING", "COMPLETED"], [s.name for s in history]
    assert not registry.champion_summary("binary", settings)["promoted_without_gate"]


@pytest.mark.parametrize("answer", ["rejected", "timed_out"])
def test_a_rejected_or_unanswered_approval_refuses_the_challenger(trained, env, answer):
    settings, before, version = _awaiting_approval(trained, env, 300 if answer == "rejected" else 3)
    reply = {"approve": False, "reason": "not before the audit"} if answer == "rejected" else None
    seen: dict = {}
    summary = _promote_flow_with(f"review-{uuid.uuid4().hex[:8]}", reply, seen)
    assert not summary["promoted"] and not summary["checks"]["approval"]
    assert _champion(settings) == before != version  # the champion stays
    tags = registry.client(settings).get_model_version(NAME, version).tags
    assert tags["gate"] == "failed" and tags["approval"] == answer
    expected = "rejected by a person: not before the audit" if answer == "rejected" else "no approval within"
    assert expected in tags["gate_reason"] and "failed approval" in summary["reason"]
    card = registry.client(settings).get_model_version(NAME, version).description
    assert "**Not promoted.**" in card and expected in card
    history = _flow_run_states(seen["run_id"])
    assert any(state.is_paused() for state in history), [state.name for state in history]  # it did wait
    # a rejection resumes and completes the run; after a timeout Prefect may have failed the paused run itself
    # ("paused and never resumed") before the flow's own end reached it: either way it is over
    assert history[-1].is_completed() if answer == "rejected" else history[-1].is_final()


def test_an_alias_moved_past_the_gate_is_reported_by_the_registry_the_cli_and_the_service(trained, env, tmp_path):
    settings = get_settings()
    c = registry.client(settings)
    _challenge(trained, "colors-svm")
    promotion.promote("binary", settings)
    gated = _champion(settings)
    by_hand = _challenge(trained, "stats-gb")  # registered, never judged: what MLflow's "Promote model" button takes
    c.set_registered_model_alias(NAME, registry.CHAMPION, by_hand)
    try:
        summary = registry.champion_summary("binary", settings)
        assert summary["promoted_without_gate"] and summary["gate"] is None
        assert f"v{by_hand}" in summary["gate_warning"] and "no gate record" in summary["gate_warning"]
        shown = subprocess.run([sys.executable, "-m", "cli", "model", "--json"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout.strip().splitlines()[-1])["promoted_without_gate"] is True
        assert "promoted without the gate" in shown.stderr and f"v{by_hand}" in shown.stderr

        with ServiceProcess(port=0, log_path=tmp_path / "service.log") as service, httpx.Client(timeout=60) as http:
            model = http.get(f"{service.url}/model").json()
            assert str(model["version"]) == by_hand and model["promoted_without_gate"] is True
            ready = http.get(f"{service.url}/readyz")
            assert ready.status_code == 200 and "promoted without the gate" in ready.json()["warning"]
            assert "popularity_model_promoted_without_gate 1.0" in http.get(f"{service.url}/metrics").text
            # the gate's own champion back: the report clears
            c.set_registered_model_alias(NAME, registry.CHAMPION, gated)
            reloaded = http.post(f"{service.url}/reload", json={})
            assert reloaded.status_code == 200 and reloaded.json()["promoted_without_gate"] is False
            assert "popularity_model_promoted_without_gate 0.0" in http.get(f"{service.url}/metrics").text
            assert "warning" not in http.get(f"{service.url}/readyz").text
    finally:
        c.set_registered_model_alias(NAME, registry.CHAMPION, gated)

"""The promotion gate on a real MLflow sqlite store: a worse challenger is refused, a better one
promoted, and a rollback gives the champion back to the version it replaced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import mlflow
import pytest

from pipelines import promotion, registry
from pipelines.training.runs import train_candidate
from tests.component.tiny import tiny_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data, parent = tiny_data(tmp_path_factory.mktemp("registry") / "home")
    # Under test is the comparison with the champion; the sanity checks have their own test below,
    # and two quick models on 80 demo images need not pass the production floor and tolerances.
    p = data.settings.promotion
    p.latency_budget_ms, p.floor_roc_auc, p.flip_tolerance, p.jpeg_tolerance = 5000.0, 0.0, 10.0, 10.0
    candidates = {n: train_candidate(n, data, parent, quick=True) for n in ("colors-svm", "stats-gb")}
    return data, candidates


def _challenge(data, candidate):
    mlflow.set_tracking_uri(data.settings.tracking_uri)
    return registry.register_challenger(candidate, "binary", data.snapshot.id, {}, {}, data.settings)


def test_gate_promotes_better_refuses_worse_and_rolls_back(trained):
    data, c = trained
    weak, strong = sorted(c.values(), key=lambda x: x.metrics["roc_auc"])
    assert strong.metrics["roc_auc"] > weak.metrics["roc_auc"] + data.settings.promotion.margin
    settings = data.settings

    first = _challenge(data, weak)
    result = promotion.promote("binary", settings)
    assert result.passed and result.champion_version is None
    assert str(registry.champion_summary("binary", settings)["version"]) == str(first.version)

    better = _challenge(data, strong)
    result = promotion.promote("binary", settings)
    assert result.passed and result.checks["beats_champion"], result.reason
    assert str(registry.champion_summary("binary", settings)["version"]) == str(better.version)
    version = registry.client(settings).get_model_version(settings.model_name("binary"), better.version)
    assert version.tags["gate"] == "passed" and "promoted" in version.description
    assert json.loads(version.tags["gate_numbers"])["challenger_roc_auc"] == pytest.approx(strong.metrics["roc_auc"])

    worse = _challenge(data, weak)
    result = promotion.promote("binary", settings)
    assert not result.passed and not result.checks["beats_champion"]
    assert str(registry.champion_summary("binary", settings)["version"]) == str(better.version)
    refused = registry.client(settings).get_model_version(settings.model_name("binary"), worse.version)
    assert refused.tags["gate"] == "failed" and "beats_champion" in refused.description

    assert str(registry.rollback("binary", settings)) == str(first.version)
    assert str(registry.champion_summary("binary", settings)["version"]) == str(first.version)


def test_gate_numbers_cover_every_sanity_check(trained):
    data, c = trained
    _challenge(data, c["stats-gb"])
    result = promotion.gate("binary", data.settings)
    assert {"no_nan", "floor", "latency", "flip_stability", "jpeg_stability"} <= set(result.checks)
    assert result.numbers["latency_ms"] > 0 and result.numbers["flip_shift"] >= 0


def test_a_missing_model_or_alias_is_no_champion(settings):
    with pytest.raises(LookupError, match="no champion yet"):
        registry.champion_summary("binary", settings)  # no registered model at all
    registry.client(settings).create_registered_model(settings.model_name("binary"))
    with pytest.raises(LookupError, match="no champion yet"):
        registry.champion_summary("binary", settings)  # the model, without the alias


def test_an_unreachable_registry_fails_fast_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "POPULARITY_"))}
    env.update(POPULARITY_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI="http://127.0.0.1:9", PYTHONPATH=str(ROOT))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.cli", "model"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "registry unreachable at http://127.0.0.1:9" in lines[0], done.stderr


def test_export_environment_bounds_mlflow_retries(settings):
    with mock.patch.dict(os.environ):  # restored whole afterwards
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"  # a team's own value wins
        settings.export_environment()
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(settings.registry.http_retries)
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"

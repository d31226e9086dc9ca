"""The promotion gate on a real MLflow sqlite store: a worse challenger is refused, a better one
promoted, and a rollback gives the champion back to the version it replaced."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from flows.training_flows import predictions_suite
from pipelines import promotion, registry
from pipelines.data.images import to_jpeg
from pipelines.models.backends import save_estimator
from pipelines.models.pyfunc import log_model
from pipelines.training.report import gate_objections
from pipelines.training.runs import Candidate, train_candidate
from pipelines.training.trainers import _sklearn_config
from tests.component.tiny import tiny_data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data, parent = tiny_data(tmp_path_factory.mktemp("registry") / "home")
    # Two quick models on 80 demo images need not pass the production floor and tolerances; each check
    # is made to refuse by its own test below.
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
    p, outcomes = data.settings.promotion, {check.name: check for check in result.outcomes}
    # each verdict is its measured number held to its threshold, and the number is what the result reports
    for name, number, limit in (("latency", "latency_ms", p.latency_budget_ms), ("flip_stability", "flip_shift",
                                p.flip_tolerance), ("jpeg_stability", "jpeg_shift", p.jpeg_tolerance)):
        value = result.numbers[number]
        assert np.isfinite(value), (number, value)
        assert outcomes[name].challenger == value and outcomes[name].threshold == limit
        assert outcomes[name].passed == (value <= limit), (name, value, limit)
    assert result.numbers["latency_ms"] > 0  # scoring took time: it was measured, not defaulted
    assert outcomes["floor"].passed == (result.numbers["challenger_roc_auc"] >= p.floor_roc_auc)


def test_selection_and_the_gate_judge_stability_alike(trained):
    """A candidate selection calls stable is not refused by the gate for stability, nor the reverse: both
    measure flip and JPEG stability on the validation split with one estimate and one threshold."""
    data, c = trained

    def worst(candidate) -> float:
        return max(candidate.validation["flip_shift"], candidate.validation["jpeg_shift"])

    candidate = max(c.values(), key=worst)  # boosted trees on colour statistics may not move at all
    _challenge(data, candidate)
    worst = worst(candidate)
    assert worst > 0
    for tolerance in (worst * 0.98, worst * 1.02):  # just under the candidate's shift, then just over it
        settings = _loosened(data.settings, flip_tolerance=tolerance, jpeg_tolerance=tolerance)
        stable_at_selection = not any("shift" in o for o in gate_objections(candidate, "binary", settings.promotion))
        result = promotion.gate("binary", settings)
        for measure in ("flip_shift", "jpeg_shift"):
            assert result.numbers[measure] == pytest.approx(candidate.validation[measure], rel=1e-6, abs=1e-9)
        assert result.numbers["stability_rows"] == len(data.rows("val"))
        stable_at_gate = result.checks["flip_stability"] and result.checks["jpeg_stability"]
        assert stable_at_gate == stable_at_selection == (tolerance > worst), (tolerance, result.reason)


def _diverged(data, parent) -> Candidate:
    """A real logged model whose weights diverged to NaN: every score it gives is NaN."""
    featurizer = data.featurizer(("colors",))
    x = data.x("train", featurizer)
    estimator = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(x, data.y("train"))
    estimator[-1].coef_[:] = np.nan
    experiment_id = mlflow.get_run(parent).info.experiment_id
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(parent_run_id=parent, nested=True,
                                                                experiment_id=experiment_id) as run:
        config = _sklearn_config(data, featurizer, list(x.columns)) | {"limits": data.settings.images.model_dump()}
        artifacts = {"estimator": save_estimator(estimator, Path(tmp) / "estimator.skops"),
                     "profiler": str(data.profiler.save(Path(tmp) / "profiler.json"))}
        info = log_model(config, artifacts, to_jpeg(next(iter(data.images.values()))))
    return Candidate("diverged", "classical", run.info.run_id, info.model_uri, {}, {}, validation={})


def _loosened(settings, **thresholds):
    settings = settings.model_copy(deep=True)
    for key, value in thresholds.items():
        setattr(settings.promotion, key, value)
    return settings


@pytest.mark.parametrize(("thresholds", "refusing"), [
    ({"floor_roc_auc": 1.01}, "floor"),
    ({"latency_budget_ms": 0.0}, "latency"),
    ({"flip_tolerance": -1.0}, "flip_stability"),
    ({"jpeg_tolerance": -1.0}, "jpeg_stability"),
    ({"margin": 1.0}, "beats_champion"),
])
def test_each_check_refuses_a_model_that_misses_its_threshold(trained, thresholds, refusing):
    data, c = trained
    _challenge(data, c["colors-svm"])
    promotion.promote("binary", data.settings)  # a champion to beat, whichever version
    _challenge(data, c["stats-gb"])
    result = promotion.gate("binary", _loosened(data.settings, **thresholds))
    assert not result.passed and not result.checks[refusing], result.reason
    assert result.thresholds[refusing] == next(iter(thresholds.values()))


def test_a_diverged_model_is_refused_by_the_nan_check_and_the_predictions_suite(trained):
    data, c = trained
    parent = mlflow.get_run(c["stats-gb"].run_id).data.tags["mlflow.parentRunId"]
    _challenge(data, _diverged(data, parent))
    result = promotion.promote("binary", data.settings, predictions_suite("binary", data.settings))
    assert not result.passed and not result.checks["no_nan"] and not result.checks["predictions_suite"]
    assert "scores not finite" in result.reason and "predictions validation failed" in result.reason


def test_the_gate_records_its_thresholds_and_the_comparison_table(trained):
    data, c = trained
    _challenge(data, c["colors-svm"])
    promotion.promote("binary", data.settings)
    version = _challenge(data, c["stats-gb"])
    strict = _loosened(data.settings, margin=0.5)  # still looser than the production floor and tolerances
    result = promotion.promote("binary", strict)
    tags = registry.client(strict).get_model_version(strict.model_name("binary"), version.version).tags
    assert json.loads(tags["gate_thresholds"]) == result.thresholds and result.thresholds["beats_champion"] == 0.5
    assert json.loads(tags["gate_loosened"])["floor_roc_auc"] == 0.0  # the fixture loosened it: on record
    assert "loosened from the defaults" in tags["gate_reason"]
    table = mlflow.artifacts.load_text(f"runs:/{c['stats-gb'].run_id}/gate/gate.md")
    assert "beats_champion" in table and "champion" in table.splitlines()[0]
    assert not re.search(r"\bnan\b", table)  # an empty cell where a check has no number
    # the version's MLflow description is its model card: data, metrics beside the baseline, every check
    card = registry.client(strict).get_model_version(strict.model_name("binary"), version.version).description
    assert card.startswith(f"# popularity-binary v{version.version}: `stats-gb` (classical)")
    assert "**Not promoted.**" in card and "not promoted: failed beats_champion" in card
    snapshot_rows = len(data.snapshot.manifest) + len(data.snapshot.rejects)
    assert f"Snapshot `{data.snapshot.id}`" in card and f"{snapshot_rows} rows collected" in card
    assert f"validation {len(data.rows('val'))}, test {len(data.rows('test'))}" in card
    metrics_row = next(line for line in card.splitlines() if line.startswith("| roc_auc"))
    assert f"{c['stats-gb'].validation['roc_auc']:.3f}" in metrics_row
    assert f"{c['stats-gb'].metrics['roc_auc']:.3f}" in metrics_row
    gate_row = next(line for line in card.splitlines() if line.startswith("| beats_champion"))
    assert "0.5" in gate_row and "False" in gate_row
    assert not re.search(r"\bnan\b", card, re.IGNORECASE) and len(card) <= 5000


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
    done = subprocess.run([sys.executable, "-m", "cli", "model"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert time.monotonic() - started < 30
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "registry unreachable at http://127.0.0.1:9" in lines[0], done.stderr


@pytest.mark.parametrize("server", ["closed port", "accepts and never answers"])
def test_promote_with_the_registry_unreachable_says_so_in_one_line_within_seconds(tmp_path, server):
    """A closed port, and a loopback socket that accepts connections and never answers: ``promote`` printed
    about 120 lines of urllib3 retries and tracebacks and took 37–49 s; now one line (and the JSON line)
    within a few seconds, before any Prefect server starts."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshakes; nothing ever reads or answers
    port = silent.getsockname()[1] if server != "closed port" else 9
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "POPULARITY_", "PREFECT_"))}
    env.update(POPULARITY_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
               PYTHONPATH=str(ROOT))
    started = time.monotonic()
    with silent:
        done = subprocess.run([sys.executable, "-m", "cli", "promote", "--json"], env=env, capture_output=True,
                              text=True, timeout=120, cwd=tmp_path)
    assert time.monotonic() - started < 15, done.stderr[-3000:]
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"registry unreachable at http://127.0.0.1:{port}" in lines[0], done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["kind"] == "unavailable"


def test_export_environment_bounds_mlflow_retries(settings):
    with mock.patch.dict(os.environ):  # restored whole afterwards
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "3"  # a team's own value wins
        settings.export_environment()
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(settings.registry.http_retries)
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def test_the_scorer_warms_a_champion_up_before_serving_it(trained, monkeypatch):
    """What a champion loads lazily (the drift profile's pretrained trunk) is loaded when the scorer
    loads it, before it is swapped in or called ready, not by the first requests (on a loaded machine
    they waited past the 60 s traffic timeout for it). The torch runtime is the lazy one: ONNX Runtime's
    session of the trunk's graph is made when the model loads."""
    from pipelines.features import embeddings
    from serving.scorer import Loaded, warm_up

    data, c = trained
    version = _challenge(data, c["stats-gb"]).version
    monkeypatch.setenv("POPULARITY_SERVING__RUNTIME", "torch")
    model, summary = registry.load_model("binary", data.settings, version=str(version))
    embeddings.backbone.cache_clear()
    warm_up(Loaded(model, summary))
    assert embeddings.backbone.cache_info().currsize == 1
    assert embeddings.backbone.cache_info().misses == 1

"""The AUC estimated before outcomes (CBPE): it matches the realized AUC while the labels follow the
calibrated scores, follows it when only the inputs drift, and cannot see the taste change."""

from __future__ import annotations

import itertools
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from monitoring import estimation, feedback, performance
from monitoring.request_store import open_request_store

CONFIDENCE = 0.95


def _window(rng, n: int = 200, spread: float = 2.0, centre: float = 0.0) -> np.ndarray:
    """Calibrated probabilities of a window of posts: a latent appeal through a logistic link."""
    return 1 / (1 + np.exp(-(centre + spread * rng.normal(0, 1, n))))


def _realized(score: np.ndarray, label: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    value = performance.roc_auc(score, label)
    low, high = performance.interval(lambda i: performance.roc_auc(score[i], label[i]), len(score), 300,
                                     CONFIDENCE, seed)
    return value, low, high


def test_the_closed_form_is_the_expectation_over_pairs_and_over_drawn_labels():
    rng = np.random.default_rng(3)
    p = np.round(rng.uniform(0, 1, 40), 1)  # with ties
    pairs = [(i, j) for i, j in itertools.permutations(range(40), 2)]
    right = sum(p[i] * (1 - p[j]) * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0) for i, j in pairs)
    assert estimation.expected_auc(p) == pytest.approx(right / sum(p[i] * (1 - p[j]) for i, j in pairs))
    window = _window(rng)
    drawn = estimation.sampled_auc(window, draws=4000)
    assert len(drawn) == 4000 and 0.6 < drawn.mean() < 1
    assert estimation.expected_auc(window) == pytest.approx(drawn.mean(), abs=0.01)


def test_with_labels_drawn_from_calibrated_scores_the_estimate_is_within_the_realized_interval():
    inside, errors = 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        p = _window(rng)
        label = (rng.random(len(p)) < p).astype(int)
        value, low, high = _realized(p, label, seed)
        guess = estimation.expected_auc(p)
        inside += low <= guess <= high
        errors.append(guess - value)
    assert inside >= 18, errors  # a 95% interval: about 19 of 20
    assert abs(np.mean(errors)) < 0.02


def test_when_only_inputs_drift_the_estimate_follows_the_realized_auc():
    """Posts that differ less in appeal are harder to order: the realized AUC falls, and so does the estimate."""
    rng = np.random.default_rng(11)
    before, after = _window(rng, 400, spread=2.0), _window(rng, 400, spread=0.6, centre=0.8)
    label = (rng.random(400) < after).astype(int)
    value, low, high = _realized(after, label)
    result = estimation.estimate(after, None, "1", 50, CONFIDENCE)
    assert estimation.expected_auc(before) - result.value > 0.1
    assert low <= result.value <= high and result.low <= value <= result.high


def test_when_the_taste_changes_the_estimate_stays_high_while_realized_falls():
    """CBPE cannot see concept shift: the scores look as sure as before, the outcomes no longer follow them."""
    rng = np.random.default_rng(12)
    p = _window(rng, 400)
    before = estimation.estimate(p, None, "1", 50, CONFIDENCE)
    taste = _window(rng, 400)  # what the audience now likes, unrelated to what the model learned
    label = (rng.random(400) < taste).astype(int)
    value, low, high = _realized(p, label)
    after = estimation.estimate(p, None, "1", 50, CONFIDENCE, judged=p, realized=value)
    assert after.value == before.value > 0.75
    assert high < after.low and after.error > 0.2
    assert "against realized" in after.message


def test_half_positive_label_schemes_recentre_the_scores_without_reordering_them():
    rng = np.random.default_rng(4)
    p = _window(rng, 300, centre=1.5)
    shifted = estimation.probabilities(p, "median-split")
    assert shifted.mean() == pytest.approx(0.5, abs=1e-6) and p.mean() > 0.7
    assert (np.argsort(shifted, kind="stable") == np.argsort(p, kind="stable")).all()
    assert estimation.probabilities(p, "favorited") == pytest.approx(p)


def test_the_calibration_check_uses_the_versions_own_test_split():
    rng = np.random.default_rng(5)
    p = _window(rng, 1000)
    label = (rng.random(1000) < p).astype(int)
    measured = {"roc_auc": performance.roc_auc(p, label), "base_rate": float(label.mean())}
    assert estimation.calibration_check(p, measured)["calibrated"] is True
    overconfident = 1 / (1 + np.exp(-4 * np.log(p / (1 - p))))  # the same order, far surer than the outcomes
    check = estimation.calibration_check(overconfident, measured)
    assert check["checked"] and check["calibrated"] is False and check["test_estimate"] > measured["roc_auc"] + 0.05
    assert estimation.calibration_check(p, {})["checked"] is False
    low = 1 / (1 + np.exp(-(np.log(p / (1 - p)) - 1)))  # every score lower: off in the large, the same order
    assert estimation.calibration_check(low, measured)["calibrated"] is False
    assert estimation.calibration_check(low, measured, "median-split")["calibrated"] is True  # windows recentre
    result = estimation.estimate(overconfident, None, "1", 50, CONFIDENCE, check)
    assert "not calibrated" in result.message and result.calibrated is False
    assert "assumes calibrated" in estimation.estimate(p, None, "1", 50, CONFIDENCE).message
    assert not estimation.estimate(p[:10], None, "1", 50, CONFIDENCE).enough_data


def test_the_monitor_reports_and_logs_the_estimate_beside_the_realized_auc(settings, monkeypatch):
    from monitoring import monitor

    rng = np.random.default_rng(6)
    p = _window(rng, 200)
    label = rng.random(200) < p
    reference = _window(rng, 500)
    champion = {"name": settings.model_name("binary"), "version": "1", "label": "median-split", "run_id": "r",
                "metrics": {"roc_auc": estimation.expected_auc(reference), "base_rate": float(reference.mean())}}
    monkeypatch.setattr(monitor.registry, "champion_summary", lambda task, settings: champion)
    monkeypatch.setattr(monitor, "reference_profile", lambda champion: pd.DataFrame({"score": reference}))
    now = time.time() - 3600
    ids = [f"{i:032x}" for i in range(200)]
    open_request_store(settings).append([{"ts": now + i, "version": "1", "score": float(s), "prediction_id": pid,
                                          "post_id": f"post-{i}", "model": champion["name"]}
                                         for i, (pid, s) in enumerate(zip(ids, p, strict=True))])
    ratio = np.where(label, 0.6, 0.2) + rng.uniform(0, 0.1, 200)
    feedback.record(pd.DataFrame({"prediction_id": ids, "likes": np.round(ratio * 1000), "followers": 1000.0}),
                    settings, mode="ephemeral")
    _, realized, report = monitor.run("binary", settings)
    estimate = realized.estimate
    assert report is not None and realized.enough_data
    assert estimate["calibrated"] is True and estimate["requests"] == 200
    assert estimate["judged_estimate"] == pytest.approx(estimate["value"])  # the same 200 predictions
    assert estimate["realized"] == realized.value and estimate["error"] == pytest.approx(
        estimate["judged_estimate"] - realized.value)
    assert realized.low <= estimate["value"] <= realized.high
    assert "value" in realized.summary() and realized.summary()["estimate"] == estimate
    assert "<h2>Estimated before outcomes</h2>" in report.read_text()
    runs = mlflow.search_runs(experiment_names=["monitoring"], output_format="list")
    logged = runs[0].data.metrics
    assert logged["estimated_value"] == pytest.approx(estimate["value"])
    assert logged["estimated_error"] == pytest.approx(estimate["error"])


def test_the_bench_prints_its_table_and_says_whether_the_estimate_followed():
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "bench_estimation.py"
    done = subprocess.run([sys.executable, str(bench), "--streams", "4", "--windows", "5"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["rule"]: r for r in json.loads(done.stdout.splitlines()[-1])["rows"]}
    assert "| taste changes |" in done.stdout
    taste = rows["taste changes"]  # blind to concept shift: the estimate stays while realized falls
    assert taste["realized_last"] < 0.6 < taste["estimate_last"]

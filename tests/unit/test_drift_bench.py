"""The drift bench's own arithmetic: its windows never share a request, its intervals and its choice of
the monitor's p-value and threshold are what its report says they are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.drift import check_drift

spec = importlib.util.spec_from_file_location("bench_drift", Path(__file__).parents[2] / "bench" / "bench_drift.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_windows_are_disjoint_full_and_in_the_pool():
    windows = bench.disjoint_windows(1050, 200)
    assert len(windows) == 5 and all(len(w) == 200 for w in windows)
    used = np.concatenate(windows)
    assert len(np.unique(used)) == len(used) and used.max() < 1050
    assert bench.disjoint_windows(150, 200) == []


@pytest.mark.parametrize(("hits", "n"), [(0, 20), (1, 20), (19, 20), (20, 20), (7, 15)])
def test_wilson_interval_is_the_score_tests_acceptance_region(hits, n):
    low, high = bench.wilson(hits, n)
    # the Wilson interval is the set of rates p whose score test |hits - n p| / sqrt(n p (1 - p)) <= z keeps
    for p, inside in ((low + 1e-4, True), (high - 1e-4, True), (low - 1e-3, False), (high + 1e-3, False)):
        if 0 < p < 1:
            assert (abs(hits - n * p) / np.sqrt(n * p * (1 - p)) <= 1.96) == inside
    assert low <= hits / n <= high and (hits > 0 or low == 0) and (hits < n or high == 1)


def test_alarms_are_check_drifts_verdicts():
    rng = np.random.default_rng(0)
    columns = ["brightness", "contrast", "saturation", "score", "pc1", "pc2"]
    reference = pd.DataFrame(rng.normal(0, 1, (300, len(columns))), columns=columns)
    windows = [pd.DataFrame(rng.normal(shift, 1, (200, len(columns))), columns=columns)
               for shift in (0.0, 0.1, 0.2, 0.4)]
    results = [check_drift(reference, w, 0.01, 0.3, 50, permutations=50) for w in windows]
    p_values = pd.DataFrame([r.features.set_index("feature")["p_value"] for r in results])
    for p_value, threshold in ((0.01, 0.3), (0.05, 0.2), (0.001, 0.5)):
        expected = [check_drift(reference, w, p_value, threshold, 50, permutations=50).drift for w in windows]
        assert list(bench.alarms(p_values, p_value, threshold)) == expected


def test_the_choice_keeps_false_alarms_down_with_a_margin_then_detects_most():
    rows = [(0.01, 0.08, 0.00, 0.70), (0.01, 0.16, 0.00, 0.80), (0.01, 0.25, 0.00, 0.85),
            (0.02, 0.08, 0.10, 1.00), (0.02, 0.16, 0.00, 0.99), (0.02, 0.25, 0.00, 0.90),
            (0.05, 0.08, 0.40, 1.00), (0.05, 0.16, 0.05, 1.00), (0.05, 0.25, 0.00, 0.95)]
    grid = pd.DataFrame(rows, columns=["p_value", "threshold", "false_alarms", "detection"])
    chosen = bench.choose(grid)
    # (0.02, 0.16) detects more but its looser neighbour (0.02, 0.08) alarms 10%; p = 0.05 and the lowest
    # threshold are the grid's loose edges; (0.02, 0.25) is the best pair with a margin
    assert (chosen["p_value"], chosen["threshold"]) == (0.02, 0.25)
    assert bench.choose(grid.assign(false_alarms=0.2)) is None

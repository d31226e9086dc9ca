"""The drift check's verdicts, its report, and the cooldown that keeps one episode to one retraining."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pandas as pd
from scipy import stats

from monitoring.cooldown import Cooldown
from monitoring.drift import EMBEDDING, MONITORED, check_drift, mmd, psi
from monitoring.report import write_report

PROJECTION = [f"pc{i}" for i in range(1, 5)]


def _profile(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: rng.normal(shift, 1.0, n) for name in MONITORED + PROJECTION})


def test_same_distribution_is_no_drift():
    result = check_drift(_profile(400, 0), _profile(200, 4), p_value=0.01, threshold=0.3, min_requests=50)
    assert result.enough_data and not result.drift
    assert set(result.features["feature"]) == {*MONITORED, EMBEDDING}
    assert result.message.startswith("no drift")


def test_shifted_features_are_drift_and_named():
    current = _profile(200, 4)
    current[["brightness", "contrast", "saturation", "score"]] -= 1.0
    result = check_drift(_profile(400, 0), current, p_value=0.01, threshold=0.3, min_requests=50)
    assert result.drift and result.drifted_share == 4 / (len(MONITORED) + 1)
    assert set(result.features.loc[result.features["drifted"], "feature"]) == {"brightness", "contrast",
                                                                               "saturation", "score"}
    assert "brightness" in result.message


def test_mmd_sees_a_joint_shift_of_the_embedding_that_no_component_shows():
    reference, current = _profile(400, 0), _profile(200, 4)
    # pc2 now follows pc1: every component keeps its N(0, 1) marginal, the joint distribution changes
    current["pc2"] = current["pc1"] * 0.95 + np.random.default_rng(5).normal(0, 0.31, 200)
    result = check_drift(reference, current, p_value=0.01, threshold=0.3, min_requests=50).features.set_index("feature")
    assert result.loc[EMBEDDING, "drifted"] and result.loc[EMBEDDING, "test"] == "MMD"
    assert all(stats.ks_2samp(reference[name], current[name]).pvalue > 0.01 for name in PROJECTION)


def test_mmd_p_value_is_uniform_enough_without_a_shift_and_tiny_with_one():
    rng = np.random.default_rng(0)
    p_values = [mmd(rng.normal(size=(150, 8)), rng.normal(size=(100, 8)), permutations=100, seed=i)[1]
                for i in range(40)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.15
    assert mmd(rng.normal(size=(150, 8)), rng.normal(0.5, 1, size=(100, 8)), permutations=100)[1] < 0.02


def test_a_few_drifted_features_stay_below_the_threshold():
    current = _profile(200, 4)
    current[["sharpness", "face_count"]] += 2.0
    result = check_drift(_profile(400, 0), current, p_value=0.01, threshold=0.3, min_requests=50)
    assert not result.drift and result.features.set_index("feature").loc["sharpness", "drifted"]


def test_too_few_requests_decide_nothing():
    result = check_drift(_profile(400, 0), _profile(20, 1, shift=5.0), p_value=0.01, threshold=0.3, min_requests=50)
    assert not result.enough_data and not result.drift
    assert "only 20 requests" in result.message


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    ref = np.random.default_rng(0).normal(0, 1, 2000)
    assert psi(ref, np.random.default_rng(1).normal(0, 1, 2000)) < 0.05
    assert psi(ref, np.random.default_rng(1).normal(1, 1, 2000)) > 0.5
    assert psi(np.ones(100), np.ones(100)) == 0.0


def test_report_is_written_with_its_figure(tmp_path):
    reference, current = _profile(300, 0), _profile(200, 1, shift=1.0)
    result = check_drift(reference, current, p_value=0.01, threshold=0.3, min_requests=50)
    page = write_report(result, reference, current, tmp_path / "report")
    assert (tmp_path / "report" / "drift.png").stat().st_size > 0
    text = page.read_text()
    assert "drift:" in text and "MMD" in text and "KS" in text and "drift.png" in text
    json.dumps(result.summary())


def _sqlite(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_cooldown_allows_one_claim_until_it_expires(tmp_path):
    url = _sqlite(tmp_path)
    assert Cooldown(url, "retrain-binary", hours=24).claim("drift")[0]
    claimed, message = Cooldown(url, "retrain-binary", hours=24).claim("drift again")
    assert not claimed and "cooldown until" in message
    assert Cooldown(url, "retrain-score", hours=24).claim("another model")[0]
    assert Cooldown(url, "retrain-binary", hours=0).claim("after the cooldown")[0]


def test_a_refused_retraining_shortens_the_cooldown_to_the_retry_delay_and_never_lengthens_it(tmp_path):
    from datetime import UTC, datetime, timedelta

    cooldown = Cooldown(_sqlite(tmp_path), "retrain-binary", hours=24)
    assert cooldown.claim("drift")[0]
    said = cooldown.retry_after(1.0)
    claimed, message = cooldown.claim("drift again")
    until = datetime.fromisoformat(message.rsplit("cooldown until ", 1)[1])
    assert not claimed and timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
    assert said == f"the next retraining may start after {until.isoformat(timespec='seconds')}"
    cooldown.retry_after(5.0)  # a longer delay than the one left: the earlier time stands
    assert cooldown.claim("drift again")[1] == message
    cooldown.retry_after(0.0)
    assert cooldown.claim("fresh data arrived")[0]


def test_cooldown_release_gives_the_claim_back(tmp_path):
    cooldown = Cooldown(_sqlite(tmp_path), "retrain-binary", hours=24)
    assert cooldown.claim("drift")[0]
    cooldown.release()
    assert cooldown.claim("drift")[0]


def _claim(url, results) -> None:
    results.put(Cooldown(url, "retrain-binary", hours=24).claim("race")[0])


def overlapping_claims(url: str) -> list[bool]:
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_claim, args=(url, results)) for _ in range(6)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    return sorted(results.get(timeout=5) for _ in processes)


def test_overlapping_claims_from_several_processes_grant_exactly_one(tmp_path):
    assert overlapping_claims(_sqlite(tmp_path)) == [False] * 5 + [True]


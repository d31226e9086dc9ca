"""Great Expectations validation: each planted defect is caught by the expectation named for it.

The manifests are a real demo snapshot's, edited in memory; GX runs in an ephemeral context except
where the file context's idempotence and Data Docs are the point.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipelines.data.collect import collect
from pipelines.data.sources import parse_spec
from pipelines.data.verdicts import FailedValidation
from pipelines.settings import Settings
from pipelines.training.data import TrainingData
from tests.helpers import posts_manifest
from validation import validate_features, validate_predictions, validate_snapshot


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    return collect(parse_spec("demo:60", settings := Settings(home=tmp_path_factory.mktemp("demo"))), settings, progress=False)


def planted(snapshot, edit) -> SimpleNamespace:
    """The snapshot with an edited copy of its manifest (snapshots themselves are immutable)."""
    manifest = edit(snapshot.manifest.copy())
    return SimpleNamespace(id=f"planted-{snapshot.id}", path=snapshot.path, meta=snapshot.meta, manifest=manifest,
                           lost_rows=snapshot.lost_rows)


def negative_likes(m, rows=1):
    m.loc[: rows - 1, "likes"] = -1
    return m


def duplicate_id(m):
    return pd.concat([m, m.iloc[[0]]], ignore_index=True)


def corrupt_size(m):
    return m.assign(width=m["width"].where(m.index != 0), height=m["height"].where(m.index != 0))


def missing_format(m):
    m.loc[0, "format"] = None
    return m


def one_pixel(m):
    m.loc[0, ["width", "height"]] = 1
    return m


def test_clean_snapshot_passes_and_reruns_in_a_file_context(snapshot, settings):
    first = validate_snapshot(snapshot, settings, mode="file")
    second = validate_snapshot(snapshot, settings, mode="file")  # everything GX stores already exists

    for report in (first, second):
        assert report.success, report.message
        assert report.critical_failures == [] and report.quarantined == 0
        assert sorted(report.clean_ids) == sorted(snapshot.manifest["image_id"])
    assert (Path(second.docs_path) / "index.html").is_file() and Path(second.docs_path).is_relative_to(settings.gx_dir)
    results = json.loads(Path(second.results_path).read_text())
    assert results["success"] is True
    expectations = [r["expectation_config"] for v in results["validation_results"] for r in v["results"]]
    assert {e["meta"]["check"] for e in expectations} >= {"image_id_unique", "split_leak", "image_min_side"}
    assert {e["severity"] for e in expectations} == {"critical", "warning"}
    assert not (settings.root / "quarantine" / f"{snapshot.id}.parquet").exists()


@pytest.mark.parametrize(("edit", "check"), [
    (negative_likes, "likes_non_negative"),
    (duplicate_id, "image_id_unique"),
    (corrupt_size, "image_decodable"),
    (missing_format, "image_decodable"),
    (one_pixel, "image_min_side"),
])
def test_a_bad_row_is_quarantined_and_the_run_goes_on(snapshot, settings, edit, check):
    bad = planted(snapshot, edit)
    report = validate_snapshot(bad, settings, mode="ephemeral")

    assert report.success, report.message
    assert check in report.checks
    bad_id = bad.manifest["image_id"].iloc[0]
    assert bad_id not in report.clean_ids
    assert len(report.clean_ids) == len(set(snapshot.manifest["image_id"])) - 1
    quarantine = pd.read_parquet(report.quarantine_path)
    assert Path(report.quarantine_path) == settings.root / "quarantine" / f"{bad.id}.parquet"
    assert set(quarantine["image_id"]) == {bad_id}
    assert quarantine["reasons"].str.contains(check).all()


def test_many_bad_rows_stop_the_run_with_a_message_naming_the_checks(snapshot, settings):
    report = validate_snapshot(planted(snapshot, lambda m: negative_likes(m, rows=10)), settings, mode="ephemeral")

    assert not report.success
    total = len(snapshot.manifest)
    assert report.quarantined == 10 and report.total == total
    assert "likes_non_negative" in report.critical_failures
    assert "likes_non_negative: 10" in report.message and f"quarantined 10 of {total}" in report.message


def test_an_image_in_two_splits_is_a_leak(snapshot, settings):
    def leak(m):
        copy = m.iloc[[0]].assign(split="test" if m.loc[0, "split"] != "test" else "train")
        return pd.concat([m, copy], ignore_index=True)

    report = validate_snapshot(planted(snapshot, leak), settings, mode="ephemeral")

    assert not report.success
    assert "split_leak" in report.critical_failures
    assert "split_leak" in report.message


def test_a_single_class_fails_and_an_imbalanced_one_warns(snapshot, settings):
    single = validate_snapshot(planted(snapshot, lambda m: m.assign(label=1)), settings, mode="ephemeral")
    assert not single.success
    assert {"label_two_classes", "class_balance_fail"} <= set(single.critical_failures)

    skewed = validate_snapshot(planted(snapshot, lambda m: m.assign(label=(m.index < 6).astype(int))),
                               settings, mode="ephemeral")
    assert skewed.success, skewed.message
    assert "class_balance_warn" in skewed.warnings


def test_nan_and_infinite_features_are_critical(settings):
    reference = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    features = pd.DataFrame({"image_id": ["x", "y", "z"], "a": [0.5, np.nan, 1.0], "b": [2.0, 2.0, np.inf]})

    report = validate_features(features, reference, settings, mode="ephemeral")

    assert not report.success
    assert {"feature_not_nan", "feature_finite"} <= set(report.critical_failures)
    assert report.clean_ids == ["x"]


def test_features_outside_the_training_range_only_warn(settings):
    reference = pd.DataFrame({"a": [0.0, 1.0]})
    report = validate_features(pd.DataFrame({"a": [0.5, 1.05, 9.0]}), reference, settings, mode="ephemeral")

    assert report.success, report.message
    assert report.warnings == ["feature_in_training_range"] and report.checks["feature_in_training_range"] == 1


def test_binary_scores_outside_the_unit_interval_fail(settings):
    report = validate_predictions(np.array([0.2, 1.5, -0.1]), "binary", settings, mode="ephemeral")
    assert not report.success
    assert report.critical_failures == ["score_in_unit_interval"] and "score_in_unit_interval: 2" in report.message
    assert validate_predictions(pd.Series([0.0, 0.5, 1.0]), "binary", settings, mode="ephemeral").success


def test_regression_scores_must_be_finite(settings):
    assert validate_predictions(np.array([3.5, -2.0]), "regression", settings, mode="ephemeral").success
    report = validate_predictions(np.array([3.5, np.inf, np.nan]), "regression", settings, mode="ephemeral")
    assert not report.success
    assert {"score_finite", "score_not_nan"} <= set(report.critical_failures)


def _verdict_on(snapshot, edit) -> SimpleNamespace:
    """The snapshot's own id with an edited manifest: the verdict is about the snapshot training reads."""
    return SimpleNamespace(**{**vars(planted(snapshot, edit)), "id": snapshot.id})


def test_training_reads_only_the_rows_validation_passed(snapshot, settings):
    report = validate_snapshot(_verdict_on(snapshot, negative_likes), settings, mode="ephemeral")
    assert report.success and report.quarantined == 1
    data = TrainingData(snapshot, "binary", settings)
    quarantined = snapshot.manifest["image_id"].iloc[0]
    assert quarantined not in set(data.manifest["image_id"]) and quarantined not in data.images
    counts = data.row_counts
    assert counts["quarantined"] == 1 and counts["train"] + counts["validation"] + counts["test"] == len(snapshot.manifest) - 1


def test_a_snapshot_that_failed_validation_is_not_trained_on(snapshot, settings):
    report = validate_snapshot(_verdict_on(snapshot, lambda m: negative_likes(m, rows=10)), settings,
                               mode="ephemeral")
    assert not report.success
    with pytest.raises(FailedValidation, match=f"snapshot {snapshot.id} failed validation.*likes_non_negative"):
        TrainingData(snapshot, "binary", settings)


def test_rows_rejected_at_collection_count_toward_the_stop_rule(tmp_path, settings):
    def validated(n: int, bad: int):
        folder = tmp_path / f"{n}-{bad}"
        folder.mkdir()
        snap = collect(parse_spec(f"manifest:{posts_manifest(folder, n, bad)}", settings), settings,
                       name=f"posts{bad}", progress=False)
        return validate_snapshot(snap, settings, mode="ephemeral")

    stopped = validated(40, bad=12)  # 30% of the source lost: the run stops and says why, by count
    assert not stopped.success and "rejected_rows" in stopped.critical_failures
    assert "rejected 12 of 40 source rows at collection: bad_value: 12" in stopped.message
    assert stopped.rejected == {"bad_value": 12}
    kept = validated(40, bad=1)  # under the limit: the run goes on and says how many rows it kept
    assert kept.success and "kept 39 of 40 rows" in kept.message
    assert kept.missing["user_mean_views"] == pytest.approx(13 / 39, abs=1e-3)  # kept, reported
    assert "user_mean_views 33%" in kept.message

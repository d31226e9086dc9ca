"""The expectation suites: what a manifest, its images, a feature table and a set of scores must satisfy.

Every expectation carries a short ``check`` name in its ``meta`` (what reports and tests refer to)
and a GX ``severity``:

- :func:`row` — critical and row-level: the failing rows are quarantined and the run goes on with
  the others while their share stays under ``validation.max_quarantine_share``;
- :func:`critical` — a failure stops the run (a leak, a single-class data set, a missing column);
- :func:`warning` — reported, the run goes on.

GX validates tables, so facts about several columns or rows (an image's shortest side, the splits
one image appears in, the NaN count of a feature row) are added as derived columns by the
``*_frame`` functions before the suite runs on them.
"""

from __future__ import annotations

import sys

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity

from pipelines.data.images import FORMATS
from pipelines.data.labels import COUNT_COLUMN, ENGAGEMENT_COUNTS, MAX_COUNT, SEQUENCE_DAYS
from pipelines.settings import Settings

SPLITS = ("train", "val", "test")
COUNTS = ["likes", "views", "favorites", "comments", "followers", "tag_count", "account_age_days"]
# The columns a label scheme reads (pipelines.data.labels), besides the label it writes.
SCHEME_COLUMNS = {
    "given": [],
    "median-split": ["likes", "followers", "likes_per_follower"],
    "favorited": ["favorites"],
    "deciles": ["views", "score"],
    "score": ["views", "posted_at", "score"],
    "likes": ["likes", "score"],
}
# Optional inputs beside the image: missing values are kept (the models impute them), their share reported.
OPTIONAL = ["followers", "account_age_days", "posts_per_week", "tag_count", "user_contacts", "user_groups",
            "user_mean_views", "photo_count", "posted_at", "tags", "title", "description"]
REQUIRED = ["image_id", "image_path", "source", "width", "height", "format", "mode", "n_bytes", "group", "split",
            "label"]
# PIL modes that pipelines.data.images converts to RGB.
RGB_MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "I;16", "I;16B", "I;16L", "F"]
FLOAT_MAX = sys.float_info.max
FUTURE_TOLERANCE_S = 300.0  # clocks disagree; an observation further ahead than this is a mistake


def _expect(kind: type[gxe.Expectation], check: str, severity: FailureSeverity, quarantine: bool, **kwargs):
    return kind(severity=severity, meta={"check": check, "quarantine": quarantine}, **kwargs)


def row(kind: type[gxe.Expectation], check: str, **kwargs) -> gxe.Expectation:
    return _expect(kind, check, FailureSeverity.CRITICAL, True, **kwargs)


def critical(kind: type[gxe.Expectation], check: str, **kwargs) -> gxe.Expectation:
    return _expect(kind, check, FailureSeverity.CRITICAL, False, **kwargs)


def warning(kind: type[gxe.Expectation], check: str, **kwargs) -> gxe.Expectation:
    return _expect(kind, check, FailureSeverity.WARNING, False, **kwargs)


def _groups_per_key(frame: pd.DataFrame, key: str) -> pd.Series:
    if key not in frame or "split" not in frame:
        return pd.Series(1, index=frame.index)
    return frame.groupby(key, dropna=True)["split"].transform("nunique").fillna(1)


def missing_shares(manifest: pd.DataFrame) -> dict[str, float]:
    """Each optional input column's share of missing values (empty text counts as missing)."""
    shares = {}
    for column in [c for c in OPTIONAL if c in manifest]:
        values = manifest[column]
        empty = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())
        shares[column] = round(float(empty.mean()), 4) if len(values) else 0.0
    return shares


def snapshot_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest plus the derived columns its suites check; the index is the row number."""
    frame = manifest.reset_index(drop=True)
    derived = {"splits_per_image": _groups_per_key(frame, "image_id"),
               "splits_per_group": _groups_per_key(frame, "group")}
    if {"width", "height"} <= set(frame.columns):
        sides = frame[["width", "height"]].astype(float)
        derived["short_side"] = sides.min(axis=1, skipna=False)
        derived["megapixels"] = sides.prod(axis=1, skipna=False) / 1e6
    days = [f"views_d{d}" for d in range(1, SEQUENCE_DAYS + 1) if f"views_d{d}" in frame]
    if days:  # one value per row rather than thirty expectations: GX updates suites in quadratic time
        daily = frame[days].astype(float)
        derived["daily_views_min"] = daily.min(axis=1, skipna=False)
        derived["daily_views_decreases"] = (daily.diff(axis=1) < 0).sum(axis=1)
    if "split" in frame:
        derived |= {f"is_{split}": (frame["split"] == split).astype(float) for split in SPLITS}
    return frame.assign(**derived)


def manifest_suite(columns: list[str], scheme: str | None, settings: Settings) -> gx.ExpectationSuite:
    """Columns, types, nulls, counts, daily views, ids, splits and class balance of a snapshot's manifest."""
    v = settings.validation
    needed = REQUIRED + SCHEME_COLUMNS.get(scheme or "", [])
    present = set(columns)
    expectations = [critical(gxe.ExpectColumnToExist, f"{c}_present", column=c) for c in needed]
    expectations += [row(gxe.ExpectColumnValuesToNotBeNull, f"{c}_not_null", column=c) for c in needed if c in present]
    expectations += [row(gxe.ExpectColumnValuesToBeUnique, "image_id_unique", column="image_id")]
    for c in [c for c in COUNTS if c in present]:
        expectations += [
            critical(gxe.ExpectColumnValuesToBeInTypeList, f"{c}_numeric", column=c,
                     type_list=["int", "int32", "int64", "Int64", "float", "float32", "float64", "Float64"]),
            row(gxe.ExpectColumnValuesToBeBetween, f"{c}_non_negative", column=c, min_value=0),
        ]
    expectations += [warning(gxe.ExpectColumnValuesToNotBeNull, f"{c}_mostly_missing", column=c,
                             mostly=1 - v.missing_share_warn) for c in OPTIONAL if c in present and c not in needed]
    if scheme == "median-split" and "followers" in present:
        expectations.append(row(gxe.ExpectColumnValuesToBeBetween, "followers_positive", column="followers",
                                min_value=0, strict_min=True))
    if "daily_views_min" in present:
        expectations += [
            row(gxe.ExpectColumnValuesToBeBetween, "daily_views_non_negative", column="daily_views_min", min_value=0),
            row(gxe.ExpectColumnValuesToBeBetween, "daily_views_non_decreasing", column="daily_views_decreases",
                max_value=0),
        ]
    if "split" in present:
        expectations += [
            row(gxe.ExpectColumnValuesToBeInSet, "split_known", column="split", value_set=list(SPLITS)),
            critical(gxe.ExpectColumnDistinctValuesToContainSet, "splits_present", column="split",
                     value_set=["train", "test"]),
            critical(gxe.ExpectColumnValuesToBeBetween, "group_split_leak", column="splits_per_group", max_value=1),
        ]
        shares = {"train": settings.splits.train, "val": settings.splits.val,
                  "test": 1 - settings.splits.train - settings.splits.val}
        expectations += [warning(gxe.ExpectColumnMeanToBeBetween, "split_share", column=f"is_{split}",
                                 min_value=max(0.0, share - v.split_share_tolerance),
                                 max_value=min(1.0, share + v.split_share_tolerance))
                         for split, share in shares.items()]
    if "label" in present:
        expectations += [
            row(gxe.ExpectColumnValuesToBeInSet, "label_binary", column="label", value_set=[0, 1]),
            critical(gxe.ExpectColumnUniqueValueCountToBeBetween, "label_two_classes", column="label", min_value=2),
            critical(gxe.ExpectColumnMeanToBeBetween, "class_balance_fail", column="label",
                     min_value=v.class_balance_fail, max_value=1 - v.class_balance_fail),
            warning(gxe.ExpectColumnMeanToBeBetween, "class_balance_warn", column="label",
                    min_value=v.class_balance_warn, max_value=1 - v.class_balance_warn),
        ]
    return gx.ExpectationSuite(name="manifest", expectations=expectations)


def images_suite(columns: list[str], settings: Settings) -> gx.ExpectationSuite:
    """The image columns the collector filled by opening each file: decodable, sizes, RGB, no leak."""
    limits = settings.images
    present = set(columns)
    expectations = []
    if {"width", "height"} <= present:
        expectations += [
            row(gxe.ExpectColumnValuesToNotBeNull, "image_decodable", column="short_side"),
            row(gxe.ExpectColumnValuesToBeBetween, "image_min_side", column="short_side", min_value=limits.min_side),
            row(gxe.ExpectColumnValuesToBeBetween, "image_max_pixels", column="megapixels",
                max_value=limits.max_pixels / 1e6),
        ]
    if "format" in present:
        expectations += [row(gxe.ExpectColumnValuesToNotBeNull, "image_decodable", column="format"),
                         row(gxe.ExpectColumnValuesToBeInSet, "image_format_known", column="format",
                             value_set=sorted(FORMATS))]
    if "mode" in present:
        expectations += [row(gxe.ExpectColumnValuesToNotBeNull, "image_decodable", column="mode"),
                         row(gxe.ExpectColumnValuesToBeInSet, "image_rgb_convertible", column="mode",
                             value_set=RGB_MODES)]
    if "n_bytes" in present:
        expectations.append(row(gxe.ExpectColumnValuesToBeBetween, "image_bytes", column="n_bytes",
                                min_value=1, max_value=limits.max_bytes))
    if "split" in present:  # image_id is the sha256 of the bytes: one id in two splits is an exact duplicate
        expectations.append(critical(gxe.ExpectColumnValuesToBeBetween, "split_leak", column="splits_per_image",
                                     max_value=1))
    return gx.ExpectationSuite(name="images", expectations=expectations)


def features_frame(features: pd.DataFrame, reference: pd.DataFrame | None, tolerance: float) -> pd.DataFrame:
    """Per-row counts of NaN, infinite and out-of-training-range features (tables may be thousands wide)."""
    values = features.select_dtypes(include=["number", "bool"]).astype(float)
    frame = pd.DataFrame({"nan_features": values.isna().sum(axis=1),
                          "infinite_features": np.isinf(values).sum(axis=1)}, index=features.index)
    if reference is not None:
        ref = reference.select_dtypes(include=["number", "bool"]).astype(float)
        shared = [c for c in values.columns if c in ref.columns]
        low, high = ref[shared].min(), ref[shared].max()
        margin = (high - low) * tolerance
        outside = values[shared].lt(low - margin) | values[shared].gt(high + margin)
        frame["features_out_of_range"] = outside.sum(axis=1)
    if "image_id" in features:
        frame["image_id"] = features["image_id"]
    return frame.reset_index(drop=True)


def features_suite(columns: list[str]) -> gx.ExpectationSuite:
    expectations = [
        critical(gxe.ExpectColumnValuesToBeBetween, "feature_not_nan", column="nan_features", max_value=0),
        critical(gxe.ExpectColumnValuesToBeBetween, "feature_finite", column="infinite_features", max_value=0),
    ]
    if "features_out_of_range" in columns:
        expectations.append(warning(gxe.ExpectColumnValuesToBeBetween, "feature_in_training_range",
                                    column="features_out_of_range", max_value=0))
    return gx.ExpectationSuite(name="features", expectations=expectations)


def predictions_suite(task: str) -> gx.ExpectationSuite:
    """Probabilities in [0, 1] for a binary task, finite scores for a regression."""
    expectations = [critical(gxe.ExpectColumnValuesToNotBeNull, "score_not_nan", column="score")]
    if task == "binary":
        expectations.append(critical(gxe.ExpectColumnValuesToBeBetween, "score_in_unit_interval", column="score",
                                     min_value=0, max_value=1))
    else:
        expectations.append(critical(gxe.ExpectColumnValuesToBeBetween, "score_finite", column="score",
                                     min_value=-FLOAT_MAX, max_value=FLOAT_MAX))
    return gx.ExpectationSuite(name="predictions", expectations=expectations)


def feedback_frame(rows: pd.DataFrame, prior: pd.DataFrame, now: float) -> pd.DataFrame:
    """Feedback rows plus what their suite checks: a count below an earlier observation of the same
    prediction (stored or earlier in the batch), a repeat of an observation, the time order."""
    frame = rows.reset_index(drop=True)
    counts = [c for c in ENGAGEMENT_COUNTS if c in frame]
    both = pd.concat([prior.assign(batch_row=-1), frame.assign(batch_row=frame.index)], ignore_index=True)
    both = both.sort_values(["observed_at", "batch_row"], kind="stable")
    ids = both["prediction_id"]
    decreases = pd.Series(0, index=both.index)
    for c in [c for c in counts if c in both]:
        highest = both[c].astype(float).groupby(ids).cummax().groupby(ids).ffill()
        decreases += (both[c].astype(float) < highest.groupby(ids).shift()).astype(int)
    repeats = both.duplicated(["prediction_id", "observed_at"], keep="first") & ids.notna()
    mine = both["batch_row"] >= 0
    by_row = pd.DataFrame({"decreases": decreases[mine].to_numpy(), "repeats": repeats[mine].astype(int).to_numpy()},
                          index=both.loc[mine, "batch_row"].astype(int)).sort_index()
    days = [c for c in frame if c.startswith("views_d")]
    derived = {
        "counts_given": frame[counts + days].notna().sum(axis=1) if counts or days else 0,
        "count_decreases": by_row["decreases"] + ((frame[days].diff(axis=1) < 0).sum(axis=1) if days else 0),
        "repeats": by_row["repeats"],
        "after_prediction_s": frame["observed_at"] - frame["predicted_at"],
        "before_now_s": now - frame["observed_at"],
    }
    return frame.assign(**derived)


def feedback_suite(columns: list[str]) -> gx.ExpectationSuite:
    """Every row: a known prediction, engagement counted, no negative, absurd (above 1e12) or falling count,
    no repeat, observed after the prediction and not in the future."""
    expectations = [
        row(gxe.ExpectColumnValuesToNotBeNull, "id_known", column="prediction_id"),
        row(gxe.ExpectColumnValuesToNotBeNull, "observed_at_readable", column="observed_at"),
        row(gxe.ExpectColumnValuesToBeBetween, "engagement_given", column="counts_given", min_value=1),
        row(gxe.ExpectColumnValuesToBeBetween, "counts_non_decreasing", column="count_decreases", max_value=0),
        row(gxe.ExpectColumnValuesToBeBetween, "no_duplicate", column="repeats", max_value=0),
        row(gxe.ExpectColumnValuesToBeBetween, "observed_after_prediction", column="after_prediction_s",
            min_value=0),
        row(gxe.ExpectColumnValuesToBeBetween, "observed_not_in_future", column="before_now_s",
            min_value=-FUTURE_TOLERANCE_S),
    ]
    expectations += [row(gxe.ExpectColumnValuesToBeBetween, f"{c}_non_negative", column=c, min_value=0)
                     for c in columns if COUNT_COLUMN.match(c)]
    expectations += [row(gxe.ExpectColumnValuesToBeBetween, f"{c}_at_most_1e12", column=c, max_value=MAX_COUNT)
                     for c in columns if COUNT_COLUMN.match(c)]
    return gx.ExpectationSuite(name="feedback", expectations=expectations)

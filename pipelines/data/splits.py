"""Deterministic grouped splits: one user's or one category's items always land on one side."""

from __future__ import annotations

import hashlib

import pandas as pd

from pipelines.settings import SplitSettings


def _bucket(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(groups: pd.Series, fractions: SplitSettings) -> pd.Series:
    """``train``/``val``/``test`` for each row from a hash of its group key."""
    buckets = groups.astype(str).map(_bucket)
    return pd.Series(
        pd.cut(buckets, [-0.1, fractions.train, fractions.train + fractions.val, 1.1],
               labels=["train", "val", "test"]).astype(str),
        index=groups.index, name="split",
    )


def time_splits(timestamps: pd.Series, fractions: SplitSettings) -> pd.Series:
    """The latest posts are the test split, as the popularity challenges do."""
    ranks = pd.to_datetime(timestamps).rank(method="first", pct=True)
    return pd.Series(
        pd.cut(ranks, [-0.1, fractions.train, fractions.train + fractions.val, 1.1],
               labels=["train", "val", "test"]).astype(str),
        index=timestamps.index, name="split",
    )

"""Label schemes: how engagement columns become the target of a task.

Every scheme adds a ``label`` column (binary tasks) and/or a ``score`` column (regression tasks) and
returns the rows it cannot label separately, each with a ``drop_reason`` for the snapshot's rejects.

| scheme         | needs                     | label / score                                               | seed |
| -------------- | ------------------------- | ----------------------------------------------------------- | ---- |
| `given`        | label                     | the source's own 0/1 (folders, grubhub)                     | 000  |
| `median-split` | likes, followers          | likes/followers above the median, after MAD on users' followers | 003 |
| `favorited`    | favorites                 | favorites ≥ 1                                               | 001  |
| `deciles`      | views                     | score 0..9: ten equal-frequency bins of views; label ≥ 5    | 001  |
| `score`        | views, posted_at          | score log(views/days + 1); label above its median           | 002  |
| `likes`        | likes                     | score log(likes + 1); label above the median likes          | 004  |

With ``views_d1..views_d30``, ``score`` also splits the 30-day sequence into ``seq_scale`` (day-30
views) and ``seq_shape_d1..d30`` (sequence / scale), seed 002.
``drop_outliers`` first removes items more than 6 SD above the mean of any engagement count the
source has (views, favorites, comments, likes; seed 001).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pandas as pd

SEQUENCE_DAYS = 30
ENGAGEMENT_COUNTS = ("views", "favorites", "comments", "likes")  # counts that only grow as a post ages
# Above any real post's engagement: one absurd count would hold every later genuine observation of its
# post back (counts never fall), so an outcome's count above it is refused.
MAX_COUNT = 1e12
# Every column that counts something, so is a non-negative number (engagement, reach, daily views).
COUNT_COLUMN = re.compile(r"^(likes|views|favorites|comments|followers|following|posts|tag_count|user_contacts|"
                          r"user_groups|user_mean_views|photo_count|views_d\d+)$")


class LabelError(ValueError):
    pass


def _require(frame: pd.DataFrame, *columns: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(usable, dropped)``: rows with a value in every needed column, and the others with the reason."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise LabelError(f"this label scheme needs the columns {missing}, which the source does not have")
    empty = frame[list(columns)].isna()
    reason = empty.apply(lambda row: "no value for " + ", ".join(row.index[row]), axis=1) if len(frame) else []
    bad = empty.any(axis=1)
    return frame[~bad], _dropped(frame[bad], pd.Series(reason, index=frame.index, dtype=str)[bad])


def _dropped(frame: pd.DataFrame, reason: str | pd.Series, outlier: bool = False) -> pd.DataFrame:
    """Rows left out with their reason; ``outlier`` marks a method's deliberate filter (seeds 001, 003) apart
    from a row that could not be labelled, which is data lost."""
    return frame.assign(drop_reason=reason, drop_outlier=outlier)


def _nothing(frame: pd.DataFrame) -> pd.DataFrame:
    return _dropped(frame.iloc[0:0], "")


def mad_filter(values: pd.Series, threshold: float = 3.5) -> pd.Series:
    """True where a value is within ``threshold`` robust z-scores of the median (seed 003)."""
    median = values.median()
    mad = (values - median).abs().median()
    if mad == 0:
        return pd.Series(True, index=values.index)
    return (0.6745 * (values - median) / mad).abs() <= threshold


def sigma_filter(values: pd.Series, sigmas: float = 6.0) -> pd.Series:
    """True where a value is at most ``sigmas`` standard deviations above the mean (seed 001)."""
    return values <= values.mean() + sigmas * values.std()


def popularity_score(frame: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.Series:
    """log(views / days + 1), Khosla et al. (seed 002): the days since posting, or, where ``views_days`` says
    over how many days the views were counted (a 30-day sequence's last day), those days."""
    posted = pd.to_datetime(frame["posted_at"], utc=True)
    now = now or posted.max() + pd.Timedelta(days=30)
    days = ((now - posted).dt.total_seconds() / 86400).clip(lower=1)
    if "views_days" in frame:
        days = pd.to_numeric(frame["views_days"], errors="coerce").fillna(days).clip(lower=1)
    return np.log(frame["views"].astype(float) / days + 1)


def sequence_scale_shape(frame: pd.DataFrame) -> pd.DataFrame:
    """The 30-day views sequence as scale (views on day 30) × shape (sequence / scale), seed 002."""
    days = [f"views_d{d}" for d in range(1, SEQUENCE_DAYS + 1)]
    if not set(days) <= set(frame.columns):
        return frame
    sequence = frame[days].astype(float)
    scale = sequence[days[-1]]
    shape = sequence.div(scale.where(scale > 0), axis=0).fillna(0.0)
    shape.columns = [f"seq_shape_d{d}" for d in range(1, SEQUENCE_DAYS + 1)]
    return pd.concat([frame.assign(seq_scale=scale), shape], axis=1)


def _above_median(values: pd.Series) -> pd.Series:
    return (values > values.median()).astype(int)


def given(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The source's own label; booleans, 0/1 and true/false strings are accepted, anything else is dropped."""
    usable, dropped = _require(frame, "label")
    words = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}
    value = usable["label"].map(lambda v: words.get(str(v).strip().lower()))
    bad = value.isna()
    return (usable[~bad].assign(label=value[~bad].astype(int)),
            pd.concat([dropped, _dropped(usable[bad], "the label is not 0/1 or true/false")]))


def users_within_mad(frame: pd.DataFrame) -> pd.Series:
    """True for the rows of users whose follower count passes the MAD filter, the statistics taken over
    users, one count each (seed 003 filtered users, not images: a prolific user would weigh once per
    photo). Without a ``user_id`` column each row is its own user."""
    followers = frame["followers"].astype(float)
    if "user_id" not in frame:
        return mad_filter(followers)
    per_user = followers.groupby(frame["user_id"]).median()
    return frame["user_id"].map(mad_filter(per_user)).fillna(False).astype(bool)


def median_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """likes / followers above the median, after the MAD outlier filter on users' followers (seed 003)."""
    usable, dropped = _require(frame, "likes", "followers")
    keep = (usable["followers"] > 0) & users_within_mad(usable)
    kept = usable[keep]
    ratio = kept["likes"] / kept["followers"]
    kept = kept.assign(label=_above_median(ratio), likes_per_follower=ratio)
    if {"views", "posted_at"} <= set(kept.columns) and kept[["views", "posted_at"]].notna().all(axis=None):
        kept = kept.assign(score=popularity_score(kept))
    return kept, pd.concat([dropped, _dropped(usable[~keep], "the user's followers are outside the median ± 3.5 "
                                                             "MAD of users", outlier=True)])


def favorited(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Favorited at least once (seed 001); beware the majority class (89% never favorited there)."""
    usable, dropped = _require(frame, "favorites")
    return usable.assign(label=(usable["favorites"] >= 1).astype(int)), dropped


def deciles(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ten equal-frequency bins of views (seed 001), kept as an ordinal score 0..9."""
    usable, dropped = _require(frame, "views")
    if len(usable) < 10:
        raise LabelError(f"deciles need at least 10 items with views, not {len(usable)}")
    bins = pd.qcut(usable["views"].rank(method="first"), 10, labels=False)
    return usable.assign(score=bins.astype(float), label=(bins >= 5).astype(int)), dropped


def score(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The popularity score of seed 002, a binary label above its median, and the sequence's scale × shape."""
    usable, dropped = _require(frame, "views", "posted_at")
    values = popularity_score(usable)
    return sequence_scale_shape(usable.assign(score=values, label=_above_median(values))), dropped


def likes(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Regression on log likes of one profile (seed 004), with a binary label above the median."""
    usable, dropped = _require(frame, "likes")
    return usable.assign(score=np.log1p(usable["likes"].astype(float)), label=_above_median(usable["likes"])), dropped


SCHEMES: dict[str, Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]] = {
    "given": given,
    "median-split": median_split,
    "favorited": favorited,
    "deciles": deciles,
    "score": score,
    "likes": likes,
}


def apply(scheme: str, frame: pd.DataFrame, drop_outliers: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(labelled, dropped)``: the labelled rows, and the rows filtered out with their ``drop_reason``."""
    if scheme not in SCHEMES:
        raise LabelError(f"unknown label scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    dropped = _nothing(frame)
    if drop_outliers:
        counts = [c for c in ENGAGEMENT_COUNTS if c in frame]
        if not counts:
            raise LabelError(f"--drop-outliers needs an engagement count: one of {list(ENGAGEMENT_COUNTS)}")
        above = pd.DataFrame({c: ~(sigma_filter(frame[c].astype(float)) | frame[c].isna()) for c in counts})
        reason = above.apply(lambda row: ", ".join(row.index[row]) + " more than 6 SD above the mean", axis=1)
        outlier = above.any(axis=1)
        frame, dropped = frame[~outlier], _dropped(frame[outlier], reason[outlier], outlier=True)
    labelled, filtered = SCHEMES[scheme](frame)
    return labelled, pd.concat([dropped, filtered])

"""Social features where the source has them (seed 002): the user's reach and habits, the post's tags,
title and description, and its hour. They arrive as optional columns beside the image and may be missing
at serving time; a missing number is NaN (the models impute it from the training split, with a missing
indicator) and missing text is empty.

Seed 002's Flickr data (the ICIP 2020 challenge) describes the user by contacts, groups, the mean views
of their photos and their photo count; the mean views alone rank-correlate 0.77 with a photo's 30-day views.
Its text columns ("the features that contained string were converted into embeddings") stay text here and
are embedded inside the model (:class:`pipelines.models.text.TextEmbedding`, fitted on the training split).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from pipelines.data.text import TEXT_COLUMNS, as_text

# The numeric columns a request may carry next to the image (the pyfunc signature's optional inputs).
SOCIAL_COLUMNS = ["followers", "account_age_days", "posts_per_week", "tag_count", "user_contacts", "user_groups",
                  "user_mean_views", "photo_count", "posted_hour"]
# The first week's cumulative views of a post already out, when the caller has them: what the nowcast
# candidate reads to score a post's prospects hours after posting (seed 002's sequences, read early).
EARLY_VIEWS = [f"views_d{d}" for d in range(1, 8)]
# Every optional column a prediction may carry beside the image.
NUMERIC_REQUEST_COLUMNS = SOCIAL_COLUMNS + EARLY_VIEWS
REQUEST_COLUMNS = NUMERIC_REQUEST_COLUMNS + TEXT_COLUMNS
# Counts with a long tail, used on a log scale.
LOG_COUNTS = ["followers", "user_contacts", "user_groups", "user_mean_views", "photo_count"]
NAMES = ["log_followers", "account_age_days", "posts_per_week", "tag_count", "log_user_contacts",
         "log_user_groups", "log_user_mean_views", "log_photo_count", "hour_sin", "hour_cos", "text"]
TEXT_FEATURE = "text"  # the post's words in one string, embedded by the model
TOKEN = re.compile(r"[^\s|,;#]+")  # one tag or word: separated by spaces, |, commas, semicolons or #


def _is_number(value) -> bool:
    """A number, not a text that looks like one: a post tagged ``2019`` keeps its tag."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) \
        and not np.isnan(value)


def request_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows' optional inputs in one shape: numbers as floats (NaN when missing), text as strings (None).

    ``tags`` given as a number (not a text) is a tag count, as older manifests have it."""
    out = frame.reindex(columns=REQUEST_COLUMNS).reset_index(drop=True)
    tags = out["tags"].astype(object)
    counted = tags.map(_is_number)
    if counted.any():
        count = pd.to_numeric(tags.where(counted), errors="coerce")
        out["tag_count"] = pd.to_numeric(out["tag_count"], errors="coerce").fillna(count)
        out["tags"] = tags.where(~counted, None)
    for column in NUMERIC_REQUEST_COLUMNS:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    for column in TEXT_COLUMNS:
        out[column] = out[column].astype(object).map(as_text).astype(object)
    return out


def social_inputs(manifest: pd.DataFrame) -> pd.DataFrame:
    """The raw social columns (and early views) of manifest rows, the posting hour taken from ``posted_at``."""
    frame = request_frame(manifest)
    if "posted_at" in manifest:
        frame["posted_hour"] = pd.to_datetime(manifest["posted_at"]).dt.hour.astype(float).to_numpy()
    return frame


def words(text) -> list[str]:
    """The lower-case tags or words of a text cell (none for a missing one)."""
    return TOKEN.findall(text.lower()) if isinstance(text, str) else []


def social_features(social: pd.DataFrame) -> pd.DataFrame:
    """Model-ready social features: log reach, the hour on a circle so 23h sits next to 0h, the number of
    tags (given, or counted in the tags) and the post's words as one ``text`` column."""
    s = request_frame(social)
    angle = 2 * np.pi * s["posted_hour"] / 24
    logs = {f"log_{c}": np.log1p(s[c].clip(lower=0)) for c in LOG_COUNTS}
    counted = s["tags"].map(lambda t: float(len(words(t))) if isinstance(t, str) else np.nan)
    text = [" ".join(w for cell in cells for w in words(cell)) for cells in zip(*(s[c] for c in TEXT_COLUMNS))]
    return pd.DataFrame({
        **logs,
        "account_age_days": s["account_age_days"],
        "posts_per_week": s["posts_per_week"],
        "tag_count": s["tag_count"].fillna(counted),
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
        TEXT_FEATURE: pd.Series(text, dtype=object),
    })[NAMES]

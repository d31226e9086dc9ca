"""Social features where the source has them (seed 002): the user's reach and habits, the post's tags
and hour. They arrive as optional columns beside the image and may be missing (NaN) at serving time.

Seed 002's Flickr data (the ICIP 2020 challenge) describes the user by contacts, groups, the mean views
of their photos and their photo count; the mean views alone rank-correlate 0.77 with a photo's 30-day views."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The raw columns a request may carry next to the image (the pyfunc signature's optional inputs).
SOCIAL_COLUMNS = ["followers", "account_age_days", "posts_per_week", "tags", "user_contacts", "user_groups",
                  "user_mean_views", "photo_count", "posted_hour"]
# The first week's cumulative views of a post already out, when the caller has them: what the nowcast
# candidate reads to score a post's prospects hours after posting (seed 002's sequences, read early).
EARLY_VIEWS = [f"views_d{d}" for d in range(1, 8)]
# Every optional column a prediction may carry beside the image.
REQUEST_COLUMNS = SOCIAL_COLUMNS + EARLY_VIEWS
# Counts with a long tail, used on a log scale.
LOG_COUNTS = ["followers", "user_contacts", "user_groups", "user_mean_views", "photo_count"]
NAMES = ["log_followers", "account_age_days", "posts_per_week", "tags", "log_user_contacts", "log_user_groups",
         "log_user_mean_views", "log_photo_count", "hour_sin", "hour_cos"]


def social_inputs(manifest: pd.DataFrame) -> pd.DataFrame:
    """The raw social columns (and early views) of manifest rows, the posting hour taken from ``posted_at``."""
    frame = manifest.reindex(columns=REQUEST_COLUMNS).astype(float)
    if "posted_at" in manifest:
        frame["posted_hour"] = pd.to_datetime(manifest["posted_at"]).dt.hour.astype(float).to_numpy()
    return frame.reset_index(drop=True)


def social_features(social: pd.DataFrame) -> pd.DataFrame:
    """Model-ready social features: log reach, and the hour on a circle so 23h sits next to 0h."""
    s = social.reindex(columns=SOCIAL_COLUMNS).astype(float).reset_index(drop=True)
    angle = 2 * np.pi * s["posted_hour"] / 24
    logs = {f"log_{c}": np.log1p(s[c].clip(lower=0)) for c in LOG_COUNTS}
    return pd.DataFrame({
        **logs,
        "account_age_days": s["account_age_days"],
        "posts_per_week": s["posts_per_week"],
        "tags": s["tags"],
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
    })[NAMES]

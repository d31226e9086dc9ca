"""Social features where the source has them (seed 002): the user's reach and habits, the post's tags
and hour. They arrive as optional columns beside the image and may be missing (NaN) at serving time."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The raw columns a request may carry next to the image (the pyfunc signature's optional inputs).
SOCIAL_COLUMNS = ["followers", "account_age_days", "posts_per_week", "tags", "posted_hour"]
NAMES = ["log_followers", "account_age_days", "posts_per_week", "tags", "hour_sin", "hour_cos"]


def social_inputs(manifest: pd.DataFrame) -> pd.DataFrame:
    """The raw social columns of manifest rows, the posting hour taken from ``posted_at``."""
    frame = manifest.reindex(columns=SOCIAL_COLUMNS).astype(float)
    if "posted_at" in manifest:
        frame["posted_hour"] = pd.to_datetime(manifest["posted_at"]).dt.hour.astype(float).to_numpy()
    return frame.reset_index(drop=True)


def social_features(social: pd.DataFrame) -> pd.DataFrame:
    """Model-ready social features: log reach, and the hour on a circle so 23h sits next to 0h."""
    s = social.reindex(columns=SOCIAL_COLUMNS).astype(float).reset_index(drop=True)
    angle = 2 * np.pi * s["posted_hour"] / 24
    return pd.DataFrame({
        "log_followers": np.log1p(s["followers"].clip(lower=0)),
        "account_age_days": s["account_age_days"],
        "posts_per_week": s["posts_per_week"],
        "tags": s["tags"],
        "hour_sin": np.sin(angle),
        "hour_cos": np.cos(angle),
    })

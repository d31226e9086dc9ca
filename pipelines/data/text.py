"""A post's own words as sources hold them: tags (``sunset|food``, space or comma separated, or a list in
JSON Lines/Parquet), a title and a description. They stay text in a snapshot; the models embed them."""

from __future__ import annotations

import numpy as np

TEXT_COLUMNS = ["tags", "title", "description"]


def as_text(value) -> str | None:
    """A text cell as one string: a list or array of tags joined by ``|``, missing or empty as None."""
    if value is None:
        return None
    if isinstance(value, list | tuple | np.ndarray):
        words = [str(v).strip() for v in value if v is not None and str(v).strip()]
        return "|".join(words) or None
    if isinstance(value, float) and np.isnan(value):
        return None
    text = str(value).strip()
    return text or None

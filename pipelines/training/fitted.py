"""What a trainer hands back, before anything is logged."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Fitted:
    """What a trainer hands back: the model's config and files, its parameters and its history,
    and any metrics or tables only this kind of model has (CV scores, sequence errors, importances)."""

    config: dict
    artifacts: dict[str, str]
    params: dict
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

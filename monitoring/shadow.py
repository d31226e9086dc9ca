"""The live comparison: the challenger scored in shadow against the champion, on the same live requests.

With ``serving.shadow_share`` above 0 the service stores the challenger's score beside the champion's
(``shadow_version``, ``shadow_score``) on a share of the requests the champion answered. Here those
shadowed requests are compared: how far the two agree (Spearman between their scores), and once
outcomes come back, both realized metrics on the same outcomes, labelled on that window alone
(:func:`monitoring.performance.outcomes` and :func:`~monitoring.performance.realized`, as for the
champion's own check), with a paired bootstrap interval of their difference (challenger − champion):
each resample draws the same posts for both. The verdict is ``better`` or ``worse`` when the whole
interval lies above or below 0, ``no difference`` when it holds 0, ``too few outcomes`` below
``performance.min_outcomes``.

After a promotion the replaced champion is what is in shadow (``role`` ``previous``) for
``promotion.rollback_watch_hours``: :func:`watch` turns the verdict into ``rollback`` when the new
champion does worse than it on the same outcomes by more than ``performance.decay_margin``, the whole
paired interval of (previous − champion) lying above the margin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from monitoring import performance
from pipelines.settings import PerformanceSettings
from pipelines.tasks import PRIMARY

BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no difference", "too few outcomes"
ROLLBACK = "rollback"  # the previous champion in shadow did better by more than the decay margin
CHALLENGER, PREVIOUS = "challenger", "previous"  # what the shadow version is: the registry's alias


@dataclass
class ShadowResult:
    version: str  # the shadow's: the challenger's, or the previous champion's
    champion_version: str
    metric: str
    requests: int  # shadowed requests (scored by both)
    role: str = CHALLENGER
    agreement: float = float("nan")  # Spearman between the two scores on them
    outcomes: int = 0  # of those, with an outcome (at most ``performance.window``, the newest)
    champion: float = float("nan")  # realized metric on those outcomes
    challenger: float = float("nan")
    difference: float = float("nan")  # challenger − champion
    low: float = float("nan")  # its paired bootstrap interval
    high: float = float("nan")
    verdict: str = TOO_FEW
    message: str = ""
    # its input-drift view: the shadowed requests profiled and scored as it sees them, against its own
    # reference (``window``, ``drifted_share``, ``drift``, ``enough_data``, ``profile``, ``message``)
    drift: dict | None = None

    def summary(self) -> dict:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def shadowed(predictions: pd.DataFrame, champion_version: str, version: str | None = None) -> pd.DataFrame:
    """The champion's records that the challenger also scored (of ``version``; None: the newest shadow
    version among them), oldest first."""
    if predictions.empty or "shadow_score" not in predictions or "version" not in predictions:
        return predictions.iloc[0:0]
    rows = predictions[(predictions["version"].astype(str) == str(champion_version))
                       & predictions["shadow_score"].notna() & predictions["shadow_version"].notna()]
    if rows.empty:
        return rows
    version = str(rows["shadow_version"].astype(str).iloc[-1]) if version is None else str(version)
    return rows[rows["shadow_version"].astype(str) == version]


def compare(predictions: pd.DataFrame, feedback: pd.DataFrame, champion: dict, task: str,
            settings: PerformanceSettings, version: str | None = None) -> ShadowResult | None:
    """The challenger ``version`` (None: the newest in shadow) against the champion on the requests both
    scored; None when there are none."""
    champion_version, primary = str(champion["version"]), PRIMARY[task]
    both = shadowed(predictions, champion_version, version)
    if both.empty:
        return None
    version = str(both["shadow_version"].astype(str).iloc[0])
    result = ShadowResult(version=version, champion_version=champion_version, metric=primary, requests=len(both))
    result.agreement = performance.spearman(both["score"].to_numpy(float), both["shadow_score"].to_numpy(float))
    head = (f"challenger v{version} in shadow of champion v{champion_version}: {len(both)} requests scored by "
            f"both, score agreement (Spearman) {result.agreement:.3f}")
    scheme = champion.get("label")
    joined = performance.outcomes(both, feedback)
    if not scheme or joined.empty:
        result.message = f"{head}; {'no label scheme' if not scheme else 'no outcomes yet'}: no verdict"
        return result
    joined = joined.merge(both[["prediction_id", "shadow_score"]], on="prediction_id", how="left")
    window = performance.realized(joined.sort_values("ts").tail(settings.window), scheme, task)
    result.outcomes = len(window)
    if len(window) < settings.min_outcomes:
        result.message = (f"{head}; {len(window)} of them have an outcome, fewer than {settings.min_outcomes}: "
                          "no verdict")
        return result
    metric = performance.roc_auc if task == "binary" else performance.spearman
    p, s = window["predicted"].to_numpy(float), window["shadow_score"].to_numpy(float)
    r = window["realized"].to_numpy(float)
    result.champion, result.challenger = metric(p, r), metric(s, r)
    result.difference = result.challenger - result.champion
    result.low, result.high = performance.interval(lambda i: metric(s[i], r[i]) - metric(p[i], r[i]), len(r),
                                                   settings.bootstrap, settings.confidence)
    if not np.isfinite(result.low):
        result.verdict = TOO_FEW
    elif result.low > 0:
        result.verdict = BETTER
    elif result.high < 0:
        result.verdict = WORSE
    else:
        result.verdict = NO_DIFFERENCE
    result.message = (f"{head}; on {len(window)} outcomes realized {primary} challenger {result.challenger:.3f}, "
                      f"champion {result.champion:.3f}, difference {result.difference:+.3f} "
                      f"[{result.low:+.3f}, {result.high:+.3f}]: {result.verdict}")
    return result


def watch(result: ShadowResult, margin: float) -> ShadowResult:
    """``result`` of the previous champion in shadow: ``rollback`` when it beat the champion on the same
    outcomes by more than ``margin`` over its whole interval (the champion's realized metric fell below
    the previous one's by the decay margin)."""
    result.role = PREVIOUS
    result.message = result.message.replace(f"challenger v{result.version}", f"previous champion v{result.version}", 1)
    if result.verdict != TOO_FEW and np.isfinite(result.low) and result.low > margin:
        result.verdict = ROLLBACK
        result.message += (f"; the champion does worse than the champion it replaced by more than the decay margin "
                           f"{margin:g}: rollback")
    return result

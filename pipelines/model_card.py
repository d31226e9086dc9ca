"""A registered version's model card: the markdown the gate writes as the version's MLflow description, so a
person reviewing the version page reads what it learned from, how it scored beside the baseline and the
oracle, and every check of the gate with its threshold and its number."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

#: MLflow stores a model version's description in a column of 5,000 characters.
MAX_CHARS = 5000


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A table as markdown with empty cells where a number is missing (never ``nan``)."""
    shown = frame.astype(object).where(frame.notna(), "")
    return shown.to_markdown(index=False, floatfmt=floatfmt)


def _metrics_table(validation: dict, test: dict, baseline: dict, oracle: dict) -> pd.DataFrame:
    names = [k for k in test if not k.startswith(("repeat_", "fit_", "base_rate", "prototypes"))]
    return pd.DataFrame([{"metric": k, "validation": validation.get(k, np.nan), "test": test.get(k, np.nan),
                          "baseline (test)": baseline.get(k, np.nan), "oracle (test)": oracle.get(k, np.nan)}
                         for k in names])


def render(name: str, version: str, tags: dict, run_metrics: dict, verdict: str, gate: pd.DataFrame,
           rows: dict, loosened: dict | None = None, status: str | None = None, chart: str | None = None) -> str:
    """The card of ``name`` v``version`` from its registry tags (snapshot, candidate, test metrics, baseline,
    oracle), its run's ``val_*`` metrics, the gate's verdict and checks, and the rows it saw. ``status``
    replaces the verdict's headline (a promotion awaiting approval); ``chart`` says where the chart of the
    primary metric across all versions is."""
    test = json.loads(tags.get("metrics", "{}"))
    baseline, oracle = json.loads(tags.get("baseline", "{}")), json.loads(tags.get("oracle", "{}"))
    validation = {k.removeprefix("val_"): v for k, v in run_metrics.items() if k.startswith("val_")}
    selection = json.loads(tags.get("selection", "null")) or {}
    passed = bool(len(gate)) and bool(gate["passed"].all())
    chosen = (f"Chosen on the validation split ({selection.get('metric')} {selection.get('value'):.3f})"
              if selection.get("value") is not None else "Chosen on the validation split")
    data = (f"Snapshot `{tags.get('snapshot')}` (label scheme `{tags.get('label') or 'the source default'}`): "
            f"{rows.get('collected', '?')} rows collected, {rows.get('rejected', '?')} rejected at collection, "
            f"{rows.get('quarantined', 0)} quarantined by validation; splits train {rows.get('train')}, "
            f"validation {rows.get('validation')}, test {rows.get('test')} (the `{tags.get('split', 'group')}` split).")
    gate_rows = (f"The gate scored {rows.get('gate_rows', '?')} test rows neither this version nor the champion "
                 f"was trained or chosen on; stability on {rows.get('stability_rows', '?')} validation images, as "
                 "selection measured it.")
    loosened_note = f"\n\nThresholds set looser than the defaults: `{json.dumps(loosened)}`." if loosened else ""
    headline = status or ("Promoted to champion" if passed else "Not promoted")
    across = f"\n\n## Across versions\n\n{chart}" if chart else ""
    card = (f"# {name} v{version}: `{tags.get('candidate')}` ({tags.get('family')})\n\n"
            f"**{headline}.** {verdict}\n\n"
            f"## Data\n\n{data}\n\n"
            f"## Metrics\n\n{chosen}; test reported once.\n\n"
            f"{markdown_table(_metrics_table(validation, test, baseline, oracle), '.3f')}\n\n"
            f"## Gate\n\n{gate_rows}\n\n{markdown_table(gate)}{loosened_note}{across}\n")
    if len(card) > MAX_CHARS:  # the verdict's details are the longest part, and they are in the tags too
        card = card.replace(verdict, verdict[: max(0, len(verdict) - (len(card) - MAX_CHARS) - 3)] + "…")
    return card[:MAX_CHARS]

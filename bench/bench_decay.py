"""Decay detection on demo data: checks until realized ROC AUC says "decay" after the audience's taste
changes, and false alarms while it does not.

The champion (``--home``, else a quick one trained in a temporary home) scores fresh demo posts in
process, as the service would; their outcomes come back from the generator under the default rule
(unchanged) or the ``shifted`` rule (the same photos and users, a new taste). Outcomes arrive in
batches of ``--batch``; after each batch the monitor's own verdict (``performance.evaluate`` with the
production settings) judges the newest ``performance.window`` outcomes.

- Unchanged: ``--streams`` streams (each its own generator seed) of ``--checks`` checks on
  default-rule outcomes: false alarms per check, with a Wilson interval.
- Changed: each stream starts with a full window of default-rule outcomes, then shifted-rule
  batches: the number of batches (and outcomes) until the first "decay".

Nothing here was tuned on these streams: the margin and window are the settings' defaults. The last
line is JSON; the exit status says whether every changed stream was caught and false alarms stay <= 5%.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_drift import wilson  # noqa: E402
from bench.champion import load_champion, train_champion  # noqa: E402

MAX_FALSE_ALARMS = 0.05


def posts(n: int, seed: int, rule: str, settings) -> tuple[list, pd.DataFrame]:
    """``n`` demo posts of one generator seed: their decoded images and their outcome rows."""
    from pipelines.data.images import decode
    from pipelines.data.sources import parse_spec

    items = list(parse_spec(f"demo:{n}?seed={seed}&rule={rule}", settings).items())
    limits = settings.images
    images = [decode(i.data, limits.max_bytes, limits.max_pixels, max_side=limits.model_side)[0] for i in items]
    return images, pd.DataFrame([i.fields for i in items])


def stream(model, champion: dict, settings, seed: int, batches: int, batch: int, change: bool) -> list[bool]:
    """The verdict after each batch of a stream: a full window of usual outcomes, then ``batches`` batches
    of usual (``change`` False) or shifted ones."""
    from monitoring import performance
    from pipelines.features.social import social_inputs

    window = settings.performance.window
    images, usual = posts(window + batches * batch, seed, "default", settings)
    outcomes = posts(window + batches * batch, seed, "shifted", settings)[1] if change else usual
    scores = model.predict_images(images, social_inputs(usual))["score"].to_numpy()
    ids = [f"{seed}-{i}" for i in range(len(images))]
    predictions = pd.DataFrame({"prediction_id": ids, "version": str(champion["version"]),
                                "ts": np.arange(len(ids), dtype=float), "score": scores})
    returned = pd.concat([usual.iloc[:window], outcomes.iloc[window:]]).assign(prediction_id=ids,
                                                                                 observed_at=time.time())
    verdicts = []
    for k in range(1, batches + 1):
        seen = window + k * batch
        result = performance.evaluate(predictions.iloc[:seen], returned.iloc[:seen], champion, settings.task,
                                      settings.performance)
        verdicts.append(result.decay)
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="A home with a champion (default: train one in a temp home).")
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--checks", type=int, default=10, help="Checks per stream.")
    parser.add_argument("--batch", type=int, default=50, help="Outcomes that come back between two checks.")
    parser.add_argument("--seed", type=int, default=7000, help="The first stream's generator seed.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            train_champion(home)
        settings, champion, model = load_champion(home)
        unchanged = [stream(model, champion, settings, args.seed + s, args.checks, args.batch, change=False)
                     for s in range(args.streams)]
        changed = [stream(model, champion, settings, args.seed + 100 + s, args.checks, args.batch, change=True)
                   for s in range(args.streams)]
    alarms = np.array(unchanged).ravel()
    low, high = wilson(int(alarms.sum()), alarms.size)
    until = [verdicts.index(True) + 1 if True in verdicts else None for verdicts in changed]
    caught = [u for u in until if u is not None]
    p = settings.performance
    print(f"champion v{champion['version']} ({champion['candidate']}), test {champion['metrics'].get('roc_auc'):.3f}; "
          f"window {p.window} outcomes, margin {p.decay_margin}, batches of {args.batch}")
    print(f"unchanged taste: {int(alarms.sum())} false alarms in {alarms.size} checks "
          f"({alarms.mean():.1%}, 95% CI {low:.1%}–{high:.1%})")
    print(f"changed taste: caught in {len(caught)} of {len(until)} streams; batches until caught: {until} "
          f"(median {np.median(caught) if caught else float('nan'):.1f}, i.e. "
          f"{np.median(caught) * args.batch if caught else float('nan'):.0f} new outcomes)")
    summary = {"false_alarms": int(alarms.sum()), "checks": int(alarms.size), "false_alarm_ci95": [low, high],
               "batches_until_caught": until, "batch": args.batch, "window": p.window, "margin": p.decay_margin,
               "champion": {"version": champion["version"], "candidate": champion["candidate"]},
               "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary))
    return 0 if len(caught) == len(until) and alarms.mean() <= MAX_FALSE_ALARMS else 1


if __name__ == "__main__":
    sys.exit(main())

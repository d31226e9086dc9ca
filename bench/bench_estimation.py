"""The AUC estimated before outcomes (``monitoring/estimation.py``, CBPE) against the realized AUC, on
streams of windows where nothing changes, where only the inputs drift, and where the taste changes.

Each window is ``--window`` served posts scored by a calibrated model: a post's appeal ``a`` gives
the score ``p = σ(2a)``. Its outcomes follow one of four rules:

- stable: appeal ~ N(0, 1) throughout; the label is drawn from ``p``.
- inputs drift: window by window the posts grow alike and more appealing (appeal ~ N(0.8 t, 1 − 0.7 t)
  at step t of 0 … 1); the label is still drawn from ``p`` (the realized AUC falls: alike posts are
  harder to order).
- inputs drift, median labels: as above, but the label is the monitor's median scheme: engagement
  ``2a + logistic noise`` above the window's own median (the scores are recentred, as the monitor does
  for such schemes; the column "raw" is the estimate without recentring).
- taste changes: appeal ~ N(0, 1), but the audience now likes ``√(1−t²)·a + t·b`` with ``b`` a trait the
  model never saw, t going 0 … 1; the scores do not change.

Per stream: the realized AUC and the estimate at the first and the last window, the mean and largest
absolute error, the share of windows whose realized AUC falls in the estimate's interval, and the
error of the baseline the monitor has without an estimate: the champion's test AUC (the first
window's realized AUC) carried forward. Synthetic on purpose: the scores are calibrated by
construction, so the table shows what the method can and cannot see, not how calibrated a champion is.
With ``--champion`` it also runs on a quick demo champion (``--home``, else a stats-gb trained in a
temporary home): windows of demo posts scored in process and labelled with the champion's own scheme
on each window, as the monitor does; unchanged, darkened photos (inputs drift, the same outcomes), and
the generator's ``rule=shifted`` outcomes (the taste changes); and the champion's calibration check on
its test split.
The last line is JSON; the exit status says whether the estimate's mean error stays under 0.03 where
the labels follow the scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monitoring import estimation  # noqa: E402
from monitoring.performance import roc_auc  # noqa: E402

MAX_ERROR = 0.03
RULES = ("stable", "inputs drift", "inputs drift, median labels", "taste changes")


def window(rule: str, t: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, labels)`` of one window at step ``t`` (0 … 1) of a stream."""
    drifting = rule.startswith("inputs drift")
    appeal = rng.normal(0.8 * t if drifting else 0.0, 1 - 0.7 * t if drifting else 1.0, n)
    p = 1 / (1 + np.exp(-2 * appeal))
    if rule == "inputs drift, median labels":
        engagement = 2 * appeal + rng.logistic(0, 1, n)  # P(engagement > 0) = p
        return p, (engagement > np.median(engagement)).astype(int)
    if rule == "taste changes":
        liked = np.sqrt(1 - t**2) * appeal + t * rng.normal(0, 1, n)
        return p, (rng.random(n) < 1 / (1 + np.exp(-2 * liked))).astype(int)
    return p, (rng.random(n) < p).astype(int)


def stream(rule: str, windows: int, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    scheme = "median-split" if rule.endswith("median labels") else None
    rows = []
    for k in range(windows):
        p, label = window(rule, k / max(windows - 1, 1), n, rng)
        result = estimation.estimate(p, scheme, "1", 2, 0.95)
        rows.append({"realized": roc_auc(p, label), "estimate": result.value, "low": result.low,
                     "high": result.high, "raw": estimation.expected_auc(p)})
    return rows


def summarise(rule: str, streams: list[list[dict]]) -> dict:
    realized = np.array([[w["realized"] for w in s] for s in streams])
    estimate = np.array([[w["estimate"] for w in s] for s in streams])
    raw = np.array([[w["raw"] for w in s] for s in streams])
    inside = np.array([[w["low"] <= w["realized"] <= w["high"] for w in s] for s in streams])
    carried = realized[:, :1]  # the test AUC the champion was promoted on, carried forward
    error = np.abs(estimate - realized)
    return {"rule": rule,
            "realized_first": float(realized[:, 0].mean()), "realized_last": float(realized[:, -1].mean()),
            "estimate_first": float(estimate[:, 0].mean()), "estimate_last": float(estimate[:, -1].mean()),
            "mean_error": float(error.mean()), "max_error": float(error.max()),
            "raw_mean_error": float(np.abs(raw - realized).mean()), "inside": float(inside.mean()),
            "carried_mean_error": float(np.abs(carried - realized).mean())}


def table(rows: list[dict], windows: int, n: int, streams: int) -> str:
    lines = [f"{streams} streams × {windows} windows of {n} posts per rule; AUC means over streams",
             "", "| stream | realized AUC first → last | estimate first → last | mean abs error (max) | "
                 "raw, not recentred | realized in estimate's 95% interval | test AUC carried forward |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['rule']} | {r['realized_first']:.3f} → {r['realized_last']:.3f} | "
                     f"{r['estimate_first']:.3f} → {r['estimate_last']:.3f} | {r['mean_error']:.3f} "
                     f"({r['max_error']:.3f}) | {r['raw_mean_error']:.3f} | {r['inside']:.0%} | "
                     f"{r['carried_mean_error']:.3f} |")
    return "\n".join(lines)


CHAMPION_RULES = ("unchanged", "darkened photos (inputs drift)", "rule=shifted (taste changes)")


def champion_rows(home: Path | None, streams: int, n: int, seed: int) -> tuple[list[dict], dict]:
    """Per rule, the realized AUC and the estimate on ``streams`` windows of ``n`` demo posts scored by a
    quick champion; and its calibration check."""
    from bench.bench_decay import posts
    from bench.bench_drift import CHOOSING
    from bench.champion import load_champion, train_champion
    from monitoring import performance
    from monitoring.monitor import reference_profile
    from pipelines.features.social import social_inputs

    with tempfile.TemporaryDirectory() as tmp:
        if home is None:
            home = Path(tmp) / "home"
            train_champion(home)
        settings, champion, model = load_champion(home)
        scheme, task = champion["label"], settings.task
        calibration = estimation.calibration_check(reference_profile(champion)["score"].to_numpy(float),
                                                   champion["metrics"], scheme)
        found: dict[str, list[tuple[float, float, float, float]]] = {rule: [] for rule in CHAMPION_RULES}
        for s in range(streams):
            images, usual = posts(n, seed + s, "default", settings)
            shifted = posts(n, seed + s, "shifted", settings)[1]
            for rule, shown, outcomes in ((CHAMPION_RULES[0], images, usual),
                                          (CHAMPION_RULES[1], [CHOOSING["darkened"](i) for i in images], usual),
                                          (CHAMPION_RULES[2], images, shifted)):
                scores = model.predict_images(shown, social_inputs(usual))["score"].to_numpy(float)
                labelled = performance.realized(outcomes.assign(predicted=scores), scheme, task)
                p = labelled["predicted"].to_numpy(float)
                result = estimation.estimate(p, scheme, str(champion["version"]), 2, 0.95)
                found[rule].append((performance.roc_auc(p, labelled["realized"].to_numpy(float)), result.value,
                                    result.low, result.high))
    rows = []
    for rule, values in found.items():
        v = np.array(values)
        rows.append({"rule": rule, "realized": float(v[:, 0].mean()), "estimate": float(v[:, 1].mean()),
                     "mean_error": float(np.abs(v[:, 1] - v[:, 0]).mean()),
                     "inside": float(((v[:, 2] <= v[:, 0]) & (v[:, 0] <= v[:, 3])).mean())})
    return rows, {"version": champion["version"], "candidate": champion.get("candidate"), **calibration}


def champion_table(rows: list[dict], check: dict, streams: int, n: int) -> str:
    lines = [f"quick demo champion v{check['version']} ({check['candidate']}): its test split's CBPE estimate "
             f"{check['test_estimate']:.3f} against measured {check['test_auc']:.3f}, mean score "
             f"{check['mean_score']:.3f} against base rate {check['base_rate']:.3f} "
             f"(calibrated: {check['calibrated']}); {streams} windows of {n} demo posts per rule",
             "", "| window | realized AUC | estimate | mean abs error | realized in estimate's 95% interval |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['rule']} | {r['realized']:.3f} | {r['estimate']:.3f} | {r['mean_error']:.3f} | "
              f"{r['inside']:.0%} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--windows", type=int, default=11, help="Windows per stream (the change spreads over them).")
    parser.add_argument("--window", type=int, default=200, help="Posts per window (the monitor's default).")
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--champion", action="store_true", help="Also on a quick demo champion's windows.")
    parser.add_argument("--home", type=Path, help="A home with a binary champion (default: train one).")
    parser.add_argument("--champion-windows", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [summarise(rule, [stream(rule, args.windows, args.window, args.seed + 1000 * i + s)
                             for s in range(args.streams)]) for i, rule in enumerate(RULES)]
    print(table(rows, args.windows, args.window, args.streams))
    summary = {"rows": rows, "streams": args.streams, "windows": args.windows, "window": args.window}
    if args.champion:
        summary["champion"], summary["calibration"] = champion_rows(args.home, args.champion_windows, args.window,
                                                                    args.seed)
        print()
        print(champion_table(summary["champion"], summary["calibration"], args.champion_windows, args.window))
    print(json.dumps({**summary, "seconds": round(time.perf_counter() - started, 1)}))
    followed = [r for r in rows if r["rule"] != "taste changes"]
    return 0 if all(r["mean_error"] <= MAX_ERROR for r in followed) else 1


if __name__ == "__main__":
    sys.exit(main())

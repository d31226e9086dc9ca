"""Drift monitor on demo data: false alarms on unshifted windows, detections on shifted ones.

A champion is trained on the default demo set (or taken from ``--home``). Its reference profile is
the monitor's own; every request is scored by the champion and featurized with the service's
profiler, in process instead of over HTTP. Unshifted windows are held-out images of the training
distribution (fresh scenes from the same generator); shifted windows are the same scenes darkened
or in greyscale. Windows are drawn from the pools at the monitor's default size and checked with
the monitor's defaults. The last line is JSON; the exit status says whether both targets hold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
MAX_FALSE_ALARMS, MIN_DETECTIONS = 0.05, 0.95


def train_champion(home: Path) -> None:
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    cli = [sys.executable, "-m", "flows.cli"]
    for args in (["collect", "--source", "demo"], ["train", "--quick", "--models", "stats-gb"], ["promote"]):
        subprocess.run(cli + args, env=env, cwd=REPO, check=True, capture_output=True)


def scenes(n: int, seed: int) -> list[Image.Image]:
    """``n`` demo scenes from the generator with another seed: same distribution, unseen images."""
    from pipelines.data.images import decode
    from pipelines.data.sources.demo import DemoSource
    from pipelines.settings import get_settings

    cfg = get_settings().demo
    source = DemoSource(n=n, seed=seed, size=cfg.image_px, users=cfg.users)
    return [decode(item.data, 10**8, 10**8)[0] for item in source.items()]


SHIFTS = {
    "unshifted": lambda img: img,
    "darkened": lambda img: ImageEnhance.Brightness(img).enhance(0.7),
    "greyscale": lambda img: img.convert("L").convert("RGB"),
}


def served(model, images: list[Image.Image]) -> pd.DataFrame:
    """What the service logs per request: the champion's monitored features and its score."""
    return model.profile_images(images).assign(score=model.predict_images(images)["score"].to_numpy())


def alarm_rate(reference: pd.DataFrame, pool: pd.DataFrame, windows: int, rng: np.random.Generator,
               settings) -> tuple[float, pd.Series]:
    """The share of windows that drift, and how often each feature drifted."""
    from monitoring.drift import check_drift

    d = settings.drift
    results = [check_drift(reference, pool.iloc[rng.choice(len(pool), d.window, replace=False)], d.p_value,
                           d.drifted_share_threshold, d.min_requests, d.mmd_permutations)
               for _ in range(windows)]
    by_feature = pd.concat([r.features.set_index("feature")["drifted"] for r in results], axis=1).mean(axis=1)
    return float(np.mean([r.drift for r in results])), by_feature


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="A home with a champion (default: train one in a temp home).")
    parser.add_argument("--pool", type=int, default=3000, help="Held-out scenes per condition.")
    parser.add_argument("--windows", type=int, default=200, help="Windows checked per condition.")
    parser.add_argument("--seed", type=int, default=1234, help="Generator seed of the held-out scenes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            train_champion(home)
        os.environ["POPULARITY_HOME"] = str(home)
        import mlflow

        from monitoring.monitor import reference_profile
        from pipelines import registry
        from pipelines.settings import get_settings

        settings = get_settings()
        settings.export_environment()
        champion = registry.champion_summary(settings.task, settings)
        reference = reference_profile(champion)
        model = mlflow.pyfunc.load_model(f"models:/{champion['name']}@champion").unwrap_python_model()
        images = scenes(args.pool, args.seed)
        rng = np.random.default_rng(0)
        checked = {name: alarm_rate(reference, served(model, [shift(img) for img in images]), args.windows, rng,
                                    settings)
                   for name, shift in SHIFTS.items()}
    rates = {name: rate for name, (rate, _) in checked.items()}
    detections = {k: v for k, v in rates.items() if k != "unshifted"}
    ok = rates["unshifted"] <= MAX_FALSE_ALARMS and min(detections.values()) >= MIN_DETECTIONS
    print(f"window {settings.drift.window} requests, reference {len(reference)} test images, "
          f"{args.windows} windows per condition, p < {settings.drift.p_value}, "
          f"drifted share >= {settings.drift.drifted_share_threshold}")
    print(f"false-alarm rate (unshifted): {rates['unshifted']:.1%} (target <= {MAX_FALSE_ALARMS:.0%})")
    for name, rate in detections.items():
        print(f"detection rate ({name}): {rate:.1%} (target >= {MIN_DETECTIONS:.0%})")
    print("share of windows in which each feature drifted:")
    print(pd.DataFrame({name: by_feature for name, (_, by_feature) in checked.items()}).round(2).to_string())
    print(json.dumps({"window": settings.drift.window, "reference": len(reference), "windows": args.windows,
                      "rates": rates, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

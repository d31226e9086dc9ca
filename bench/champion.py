"""A demo champion for the benches and tests that need a served model: collect, train one quick candidate,
promote; and the champion of a home loaded in process, as the scorer holds it.

:func:`train_champion` runs :func:`collect_train_promote` in a child process (``python -m bench.champion
SOURCE``), so the flows read a home and settings of their own, whatever the caller's process points at.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Gate settings for a champion that a bench or a test needs to exist, not to be good: a quick model on a few
# hundred demo photos shifts more under a flip or a JPEG round trip than the gate's stability checks allow.
STABILITY_RELAXED = {"POPULARITY_PROMOTION__FLIP_TOLERANCE": "100", "POPULARITY_PROMOTION__JPEG_TOLERANCE": "100"}
# ... and one that the gate promotes whatever its metric and latency (the CNN benches' quick champions)
ANY_CHAMPION = {**STABILITY_RELAXED, "POPULARITY_PROMOTION__FLOOR_ROC_AUC": "0", "POPULARITY_PROMOTION__MARGIN": "-1",
                "POPULARITY_PROMOTION__LATENCY_BUDGET_MS": "100000"}


def collect_train_promote(source: str, task: str = "binary", models: tuple[str, ...] = ("stats-gb",)) -> dict:
    """In this process, under its ``POPULARITY_HOME``: collect ``source``, train quick ``models`` (a
    ``stats-gb`` by default) for ``task`` and promote the best; returns the promotion summary
    (RuntimeError when the gate refuses)."""
    from pipelines.settings import load_settings

    load_settings()  # before the flows import Prefect and MLflow: they must find the home's settings
    from flows.data_flows import collect_flow
    from flows.training_flows import promote_flow, train_flow

    collect_flow(source=source)
    train_flow(task=task, quick=True, models=list(models))
    promoted = promote_flow(task=task)
    if not promoted["promoted"]:
        raise RuntimeError(f"the gate refused the champion: {promoted['reason']}")
    return promoted


def train_champion(home: Path, source: str = "demo", settings: dict[str, str] | None = None,
                   timeout_s: float = 900, task: str = "binary",
                   models: tuple[str, ...] = ("stats-gb",)) -> dict[str, str]:
    """:func:`collect_train_promote` under ``home`` in one child process, with nothing of the caller's
    MLflow, Prefect or BentoML settings but ``settings`` (a Prefect API to report to, relaxed gates);
    returns that process's environment for later commands."""
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    env.update(settings or {})
    done = subprocess.run([sys.executable, "-m", "bench.champion", source, "--task", task,
                           "--models", ",".join(models)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"training a champion on {source} failed:\n{done.stderr[-3000:]}")
    return env


def load_champion(home: Path):
    """``(settings, champion summary, python model)`` of ``home``'s champion; this process's settings,
    MLflow and Prefect then point at ``home``."""
    os.environ["POPULARITY_HOME"] = str(home)
    from pipelines import registry
    from pipelines.settings import load_settings

    settings = load_settings()
    model, champion = registry.load_model(settings.task, settings)
    return settings, champion, model


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Collect SOURCE, train quick candidates (stats-gb) and promote "
                                                 "the best, under POPULARITY_HOME.")
    parser.add_argument("source", nargs="?", default="demo")
    parser.add_argument("--task", default="binary")
    parser.add_argument("--models", default="stats-gb", help="comma-separated candidates")
    args = parser.parse_args()
    collect_train_promote(args.source, args.task, tuple(args.models.split(",")))

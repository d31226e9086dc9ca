"""A demo champion for the benches and tests that need a served model: collect, train one quick candidate,
promote; and the champion of a home loaded in process, as the scorer holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_champion(home: Path, source: str = "demo", settings: dict[str, str] | None = None,
                   timeout_s: float = 900) -> dict[str, str]:
    """Collect ``source``, train a quick ``stats-gb`` and promote it under ``home``, by the flows in one
    child process, with nothing of the caller's MLflow, Prefect or BentoML settings but ``settings`` (a
    Prefect API to report to, relaxed gates); returns that process's environment for later commands."""
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    env.update(settings or {})
    script = ("from pipelines.settings import load_settings\nload_settings()\n"
              "from flows.data_flows import collect_flow\nfrom flows.training_flows import promote_flow, train_flow\n"
              f"collect_flow(source={source!r}); train_flow(quick=True, models=['stats-gb'])\n"
              "assert promote_flow()['promoted'], 'the gate refused the champion'")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"training a champion on {source} failed:\n{done.stderr[-3000:]}")
    return env


def load_champion(home: Path):
    """``(settings, champion summary, python model)`` of ``home``'s champion; this process's settings,
    MLflow and Prefect then point at ``home``."""
    os.environ["POPULARITY_HOME"] = str(home)
    import mlflow

    from pipelines import registry
    from pipelines.settings import get_settings

    settings = get_settings()
    settings.export_environment()
    champion = registry.champion_summary(settings.task, settings)
    model = mlflow.pyfunc.load_model(f"models:/{champion['name']}@champion").unwrap_python_model()
    return settings, champion, model

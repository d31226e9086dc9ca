"""A demo champion for the benches that need a served model: collect, train one quick candidate, promote;
and the champion of a home loaded in process, as the scorer holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train_champion(home: Path, source: str = "demo") -> None:
    """Under ``home``, with nothing of the caller's MLflow, Prefect or BentoML settings."""
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    cli = [sys.executable, "-m", "flows.cli"]
    for args in (["collect", "--source", source], ["train", "--quick", "--models", "stats-gb"], ["promote"]):
        subprocess.run(cli + args, env=env, cwd=REPO, check=True, capture_output=True)


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

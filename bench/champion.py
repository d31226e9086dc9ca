"""A demo champion for the benches that need a served model: collect, train one quick candidate, promote."""

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

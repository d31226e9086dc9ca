"""`popularity promote` exits 1 when the gate refuses, so that a script never reads a refusal as success."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_promote_exits_1_when_the_gate_refuses(champion_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(champion_home, home)  # the gate writes its verdict on the version: leave the shared one alone
    env = {**os.environ, "POPULARITY_HOME": str(home), "POPULARITY_PROMOTION__FLOOR_ROC_AUC": "1.01"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "promote", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["promoted"] is False and summary["checks"]["floor"] is False
    version = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_model_version("popularity-binary", summary["version"])
    assert version.tags["gate"] == "failed" and "floor" in version.tags["gate_reason"]

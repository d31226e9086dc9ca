"""Usage errors are answered at once, in one line, before any server starts or any model code loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POPULARITY_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("import time:")]


def test_an_unknown_model_is_a_usage_error_before_torch_or_prefect(tmp_path):
    done = _cli(tmp_path / "home", "train", "--models", "no-such-model")
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "unknown models ['no-such-model']" in message and "stats-gb" in message
    assert not {"torch", "prefect", "mlflow"} & _imported(done.stderr)
    assert not (tmp_path / "home" / "prefect").exists()


def test_training_without_a_snapshot_says_what_to_run(tmp_path):
    done = _cli(tmp_path / "home", "train", "--models", "stats-gb")
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "no snapshot" in message and "popularity collect" in message
    assert not {"torch", "prefect"} & _imported(done.stderr)


def test_stack_up_without_postgresql_says_what_it_needs_and_starts_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flows.cli", "stack", "up"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "POPULARITY_HOME": str(tmp_path / "home"),
                               "POPULARITY_STACK__POSTGRES_URL": "postgresql+psycopg2://postgres@127.0.0.1:9/postgres"})
    assert done.returncode == 1
    (message,) = _messages(done.stderr)
    assert "needs PostgreSQL at postgresql+psycopg2://postgres@127.0.0.1:9" in message
    assert "POPULARITY_STACK__POSTGRES_URL" in message
    assert not (tmp_path / "home" / "stack" / "stack.json").exists()


def test_stack_status_and_env_say_when_no_stack_runs(tmp_path):
    status = _cli(tmp_path / "home", "stack", "status", "--json")
    assert status.returncode == 1 and '"running": false' in status.stdout
    env = _cli(tmp_path / "home", "stack", "env")
    assert env.returncode == 1 and "popularity stack up" in _messages(env.stderr)[0]


def test_a_worker_without_a_prefect_server_is_a_usage_error(tmp_path):
    done = _cli(tmp_path / "home", "worker", "--pool", "popularity")
    assert done.returncode == 2 and "PREFECT_API_URL" in _messages(done.stderr)[0]
    assert "prefect" not in _imported(done.stderr)

"""Servers for integration tests that need one without the whole stack: an `mlflow server` in its own
session, and an environment cleared of the developer's own servers and homes."""

from __future__ import annotations

import os
from pathlib import Path

from ops import processes
from ops.processes import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """The session's environment without the developer's stores; ``PREFECT_API_URL`` stays: it is the
    session's own server (tests/conftest.py)."""
    # A loaded CI machine can take longer than the 20 s default to start an ephemeral API.
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_HOME", "BENTOML_HOME", "POPULARITY_HOME"):
        env.pop(var, None)
    return {**env, **extra}


def mlflow_server(backend_uri: str, artifacts: Path, logs: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    return processes.mlflow_server(backend_uri, artifacts, port or free_port(), logs / "mlflow.log", clean_env())

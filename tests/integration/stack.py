"""The production-like stack on loopback for tests: fresh PostgreSQL databases, `mlflow server`,
`prefect server start` and process workers, each started in its own session and stopped by id."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from flows import processes
from flows.processes import ManagedProcess

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}
REPO = Path(__file__).resolve().parents[2]


def postgres_available() -> bool:
    return subprocess.run(["pg_isready", "-h", PG["host"], "-p", PG["port"]], capture_output=True).returncode == 0


def psql(sql: str, database: str = "postgres") -> str:
    done = subprocess.run(["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", database, "-tAc", sql],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    psql(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    # A loaded CI machine can take longer than the 20 s default to start an ephemeral API.
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME", "POPULARITY_HOME"):
        env.pop(var, None)
    return {**env, **extra}


def mlflow_server(backend_uri: str, artifacts: Path, logs: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    return processes.mlflow_server(backend_uri, artifacts, port or free_port(), logs / "mlflow.log", clean_env())


def prefect_server(database_url: str, home: Path, logs: Path) -> tuple[ManagedProcess, str]:
    env = clean_env(PREFECT_HOME=str(home), PREFECT_API_DATABASE_CONNECTION_URL=database_url,
                    PREFECT_UI_ENABLED="false")
    return processes.prefect_server(free_port(), logs / "prefect-server.log", env)


def prefect(args: list[str], env: dict, timeout_s: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def worker(pool: str, env: dict, logs: Path, name: str = "worker") -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type",
                                 "process", "--name", name], logs / f"{name}.log",
                          {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}).start()


DEPLOY = """
import json, sys
from prefect import flow

pool, specs = sys.argv[1], json.loads(sys.argv[2])
# to_deployment().apply(): flow.deploy() in prefect 3.8.8 sends a null limit that the server refuses (422)
for entrypoint, name, parameters in specs:
    flow.from_source(source=sys.argv[3], entrypoint=entrypoint).to_deployment(
        name=name, work_pool_name=pool, parameters=parameters).apply()
"""


def deploy(pool: str, specs: list[tuple[str, str, dict]], env: dict) -> None:
    """Register ``(entrypoint, name, parameters)`` deployments of this checkout on a process pool."""
    import json

    done = subprocess.run([sys.executable, "-c", DEPLOY, pool, json.dumps(specs), str(REPO)], env=env,
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]

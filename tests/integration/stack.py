"""The production-like stack on loopback for tests: fresh PostgreSQL databases, `mlflow server`,
`prefect server start` and process workers, each started in its own session and stopped by id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

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


class Process:
    """A server or worker in its own process group, so that stopping it stops its children too."""

    def __init__(self, name: str, args: list[str], env: dict, logs: Path):
        self.name, self.log_path = name, logs / f"{name}.log"
        logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def wait_healthy(self, url: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} was not healthy at {url} after {timeout_s:.0f}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 20) -> None:
        if self.popen.poll() is None:
            os.killpg(self.pid, sig)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()


def mlflow_server(backend_uri: str, artifacts: Path, logs: Path, port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    server = Process("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                                "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
                                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                     clean_env(), logs)
    url = f"http://127.0.0.1:{port}"
    server.wait_healthy(f"{url}/health")
    return server, url


def prefect_server(database_url: str, home: Path, logs: Path) -> tuple[Process, str]:
    port = free_port()
    env = clean_env(PREFECT_HOME=str(home), PREFECT_API_DATABASE_CONNECTION_URL=database_url,
                    PREFECT_UI_ENABLED="false")
    server = Process("prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                        "--port", str(port)], env, logs)
    url = f"http://127.0.0.1:{port}/api"
    server.wait_healthy(f"{url}/health", timeout_s=180)
    return server, url


def prefect(args: list[str], env: dict, timeout_s: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def worker(pool: str, env: dict, logs: Path, name: str = "worker") -> Process:
    return Process(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                          "--name", name], {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, logs)


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

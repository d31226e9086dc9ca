"""``popularity stack up|down|status``: the team's stack as local processes under the home.

MLflow (PostgreSQL backend store, proxied artifacts), the Prefect server (PostgreSQL), a worker on
the process pool that registers the scheduled deployments, and the service following the champion.
Each runs in its own process group and outlives the command; ``<home>/stack/stack.json`` records
their process ids and URLs, so ``status`` and ``down`` work from any shell.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from ops.processes import ManagedProcess, free_port, mlflow_server, prefect_server, stop_groups
from pipelines.settings import Settings
from pipelines.tasks import TASKS

DATABASES = ("mlflow", "prefect", "monitoring")


class StackError(RuntimeError):
    """The stack cannot start (no PostgreSQL, a part that does not come up) or is already running."""


@dataclass
class Part:
    name: str
    pid: int
    url: str
    health: str | None  # a URL that answers 200 when the part is healthy; None: a live process is enough
    log: str
    ready: str | None = None  # the service's /readyz: healthy and serving a champion are not the same

    def readiness(self) -> tuple[bool, str]:
        try:
            response = httpx.get(self.ready, timeout=3)
        except httpx.HTTPError as exc:
            return False, str(exc)
        return response.status_code == 200, "ready" if response.status_code == 200 else response.text[:300]

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _zombie(self.pid)

    def healthy(self) -> bool:
        if not self.alive():
            return False
        if self.health is None:
            return True
        try:
            return httpx.get(self.health, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, grace_s: float = 30) -> None:
        stop_parts([self], grace_s)


def stop_parts(parts: list[Part], grace_s: float = 30) -> None:
    """Stop parts together (``ops.processes.stop_groups``): parts stopping together wait one grace, not one
    each."""
    stop_groups({part.pid: part.alive for part in parts}, grace_s=grace_s)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return False


class Stack:
    def __init__(self, settings: Settings, task: str = "binary"):
        self.settings, self.task = settings, task
        self.dir = settings.root / "stack"
        self.state_path = self.dir / "stack.json"

    # -- where things are

    def database_url(self, database: str, driver: str) -> str:
        server = sa.make_url(self.settings.stack.postgres_url.get_secret_value())
        return server.set(drivername=driver, database=f"{self.settings.stack.database_prefix}_{database}") \
            .render_as_string(hide_password=False)

    def parts(self) -> list[Part]:
        if not self.state_path.exists():
            return []
        return [Part(**p) for p in json.loads(self.state_path.read_text())["parts"]]

    def environment(self) -> dict[str, str]:
        """What a shell (or a part) sets to use this stack: ``eval "$(popularity stack env)"``."""
        urls = {p.name: p.url for p in self.parts()}
        if not urls:
            raise StackError("the stack is not running; start it with `popularity stack up`")
        return {"MLFLOW_TRACKING_URI": urls["mlflow"], "PREFECT_API_URL": urls["prefect"],
                "POPULARITY_STORE__URL": self.database_url("monitoring", "postgresql+psycopg2"),
                "POPULARITY_HOME": str(self.settings.root), "POPULARITY_SERVICE_URL": urls["service"]}

    # -- commands

    def up(self, on_progress=print) -> dict:
        if any(p.alive() for p in self.parts()):
            raise StackError(f"the stack is already running (see `popularity stack status`); stop it with "
                             f"`popularity stack down` first (state: {self.state_path})")
        self._create_databases()
        self.dir.mkdir(parents=True, exist_ok=True)
        started: list[Part] = []
        try:
            for start in (self._mlflow, self._prefect, self._worker, self._service):
                part = start(started)
                started.append(part)
                self._save(started)
                on_progress(f"{part.name}: {part.url} (log: {part.log})")
        except Exception as exc:
            for part in reversed(started):
                part.stop()
            self.state_path.unlink(missing_ok=True)
            raise StackError(f"the stack did not start: {exc}") from exc
        return self.status()

    def status(self) -> dict:
        parts = self.parts()
        report = {p.name: {"url": p.url, "pid": p.pid, "alive": p.alive(), "healthy": p.healthy(), "log": p.log}
                  for p in parts}
        for p in parts:
            if p.ready:
                report[p.name]["ready"], report[p.name]["readiness"] = p.readiness()
        return {"running": bool(parts) and all(r["healthy"] for r in report.values()), "parts": report,
                "home": str(self.settings.root)}

    def down(self) -> dict:
        """Stop the parts that use the servers (the service, the worker) together, then the servers."""
        parts = self.parts()
        users = [p for p in parts if p.name in ("service", "worker")]
        stop_parts(users)
        stop_parts([p for p in parts if p not in users])
        self.state_path.unlink(missing_ok=True)
        return {"stopped": [p.name for p in parts]}

    # -- the parts, in start order; each gets the parts started before it

    def _create_databases(self) -> None:
        """Create the stack's databases that are missing; no PostgreSQL is a clear error, not a hang."""
        server = self.settings.stack.postgres_url.get_secret_value()
        engine = sa.create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as connection:
                existing = set(connection.execute(sa.text("SELECT datname FROM pg_database")).scalars())
                for database in DATABASES:
                    name = f"{self.settings.stack.database_prefix}_{database}"
                    if name not in existing:
                        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            raise StackError(
                f"the stack needs PostgreSQL at {sa.make_url(server).render_as_string()} "
                "(set POPULARITY_STACK__POSTGRES_URL to a server where this user may create databases): "
                f"{str(exc.orig).strip().splitlines()[0]}") from exc
        finally:
            engine.dispose()

    def _env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "POPULARITY_HOME": str(self.settings.root), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               **extra}
        env.pop("PREFECT_API_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        return env

    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _mlflow(self, started: list[Part]) -> Part:
        server, url = mlflow_server(self.database_url("mlflow", "postgresql+psycopg2"), self.dir / "artifacts",
                                    free_port(self.settings.stack.mlflow_port), self._log("mlflow"), self._env())
        return Part("mlflow", server.pid, url, f"{url}/health", str(server.log_path))

    def _prefect(self, started: list[Part]) -> Part:
        env = self._env(PREFECT_HOME=str(self.dir / "prefect-server"),
                        PREFECT_API_DATABASE_CONNECTION_URL=self.database_url("prefect", "postgresql+asyncpg"))
        server, url = prefect_server(free_port(self.settings.stack.prefect_port), self._log("prefect"), env)
        return Part("prefect", server.pid, url, f"{url}/health", str(server.log_path))

    def _part_env(self, started: list[Part]) -> dict[str, str]:
        urls = {p.name: p.url for p in started}
        return {**self._env(), "MLFLOW_TRACKING_URI": urls["mlflow"], "PREFECT_API_URL": urls["prefect"],
                "POPULARITY_STORE__URL": self.database_url("monitoring", "postgresql+psycopg2")}

    def _worker(self, started: list[Part]) -> Part:
        """``popularity worker``: it registers every task's deployments (the service serves one task; the
        other's champion is served the same way), then polls the pool."""
        pool = self.settings.stack.pool
        worker = ManagedProcess("worker", [sys.executable, "-m", "cli", "worker", "--pool", pool,
                                           "--task", ",".join(TASKS)], self._log("worker"),
                                self._part_env(started)).start()
        api = self._part_env(started)["PREFECT_API_URL"]
        for task in TASKS:
            worker.wait_healthy(f"{api}/deployments/name/monitor/popularity-{task}",
                                self.settings.stack.start_timeout_s)
        return Part("worker", worker.pid, f"{api.removesuffix('/api')}/work-pools/work-pool/{pool}", None,
                    str(worker.log_path))

    def _service(self, started: list[Part]) -> Part:
        """The service of the stack's task starts with or without a champion: ``/livez`` says it is up,
        ``/readyz`` whether it serves a model."""
        port = free_port(self.settings.serving.port)
        env = {**self._part_env(started), "POPULARITY_TASK": self.task}
        service = ManagedProcess("service", [sys.executable, "-m", "cli", "serve", "--port", str(port)],
                                 self._log("service"), env).start()
        url = f"http://{self.settings.serving.host}:{port}"
        service.wait_healthy(f"{url}/livez", self.settings.stack.start_timeout_s)
        return Part("service", service.pid, url, f"{url}/livez", str(service.log_path), ready=f"{url}/readyz")

    def _save(self, parts: list[Part]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"parts": [asdict(p) for p in parts]}, indent=2))
        tmp.replace(self.state_path)

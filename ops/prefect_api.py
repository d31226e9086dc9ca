"""Which Prefect API a command's flows report to: the one configured, else one already running for this
home, else a temporary one started and stopped around the command.

A temporary server costs every command its start-up (10–30 s on two cores), so ``popularity prefect up``
leaves one running under the home, on the same database the temporary ones use; the stack's server
(``popularity stack up``) is reused the same way.
"""

from __future__ import annotations

import atexit
import json
import os
from dataclasses import asdict

from ops.processes import free_port, prefect_server
from ops.stack import Part, Stack
from pipelines.settings import Settings


class PrefectServer:
    """``popularity prefect up|down``: one Prefect server (SQLite under the home) that outlives the command."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.state_path = settings.root / "prefect-server.json"

    def part(self) -> Part | None:
        return Part(**json.loads(self.state_path.read_text())) if self.state_path.exists() else None

    def up(self) -> Part:
        if (running := self.part()) and running.healthy():
            return running
        log = self.settings.root / "logs" / "prefect-server.log"
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # PREFECT_HOME: the home's
        server, url = prefect_server(free_port(self.settings.stack.prefect_port), log, env)
        part = Part("prefect", server.pid, url, f"{url}/health", str(log))
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(part)))
        tmp.replace(self.state_path)
        return part

    def down(self) -> bool:
        """Stop the server; False when none was running."""
        part = self.part()
        if part is not None:
            part.stop()
            self.state_path.unlink(missing_ok=True)
        return part is not None


def use_running_api(settings: Settings) -> str:
    """Point this process at a healthy Prefect server of this home unless ``PREFECT_API_URL`` is set,
    else at a temporary one; returns the API URL in use."""
    if configured := os.environ.get("PREFECT_API_URL"):
        return configured
    candidates = [p for p in Stack(settings).parts() if p.name == "prefect"] + [PrefectServer(settings).part()]
    for part in filter(None, candidates):
        if part.healthy():
            os.environ["PREFECT_API_URL"] = part.url
            return part.url
    return _temporary_api(settings)


def _temporary_api(settings: Settings) -> str:
    """A server on the home's database for this command alone. Prefect would start one itself, but
    its server outlives a command killed by SIGKILL; the kernel stops this one with its parent."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server, url = prefect_server(free_port(), settings.root / "logs" / "prefect-temporary.log", env,
                                 die_with_parent=True)
    atexit.register(server.stop)
    os.environ["PREFECT_API_URL"] = url
    return url

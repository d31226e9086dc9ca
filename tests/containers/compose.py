"""A compose project of deploy/compose.yaml on this machine's Docker daemon, for the container tier: the
images built by deploy/containers/build.sh, a project name and host ports of its own (nothing of a
developer's `make stack-containers` is touched), health waited for, logs kept, `down -v` at the end."""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ops.processes import free_port
from pipelines.data.sources.demo import DemoSource

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "deploy" / "containers" / "build.sh"
COMPOSE_FILES = [REPO / "deploy" / "compose.yaml", Path(__file__).with_name("compose.quick.yaml")]
DOCKER = "/usr/bin/docker"  # Debian's CLI (base.sh): the Docker 28 CLI on PATH has no BuildKit here


def must_have(reason: str) -> None:
    """No Docker here: a skip with the reason, a failure under CI=true (CI runs this tier only where a
    daemon can be started, so a missing one there is a broken machine, not a missing service)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def build_images(log: Path) -> None:
    """deploy/containers/build.sh: Docker and the base images when missing, then the stack's images."""
    if os.geteuid() != 0 and not Path("/var/run/docker.sock").exists():
        must_have("the container tier starts dockerd and needs root (or a running daemon)")
    if shutil.which("apt-get") is None and not Path("/usr/sbin/dockerd").exists():
        must_have("no dockerd and no apt-get to install Debian's docker.io")
    with log.open("w") as out:
        done = subprocess.run([str(BUILD)], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=3000)
    assert done.returncode == 0, f"deploy/containers/build.sh failed:\n{log.read_text()[-4000:]}"


def compose_command() -> list[str]:
    """Compose v2 where the CLI has it, else Debian's docker-compose 1.29."""
    if subprocess.run([DOCKER, "compose", "version"], capture_output=True).returncode == 0:
        return [DOCKER, "compose"]
    return ["docker-compose"]


@dataclass
class Stack:
    """One compose project; ``ports`` are its host ports by compose service."""

    workdir: Path
    api_key: str
    project: str = field(default_factory=lambda: f"popularity-test-{uuid.uuid4().hex[:8]}")
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in
                                                           ("mlflow", "prefect-server", "service", "service-score")})

    @property
    def incoming(self) -> Path:
        return self.workdir / "incoming"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "POSTGRES_PASSWORD": self._password, "POPULARITY_API_KEY": self.api_key,
                "POPULARITY_INCOMING": str(self.incoming),
                "POPULARITY_MLFLOW_PORT": str(self.ports["mlflow"]),
                "POPULARITY_PREFECT_PORT": str(self.ports["prefect-server"]),
                "POPULARITY_SERVICE_PORT": str(self.ports["service"]),
                "POPULARITY_SCORE_PORT": str(self.ports["service-score"])}

    def __post_init__(self):
        self._password = secrets.token_hex(16)
        # The containers' user (uid 10001) reads the retrain source: a folder others may enter.
        self.incoming.mkdir(parents=True, exist_ok=True)
        for folder in (self.workdir, self.incoming):
            folder.chmod(0o755)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def compose(self, *args: str, timeout_s: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        files = [part for path in COMPOSE_FILES for part in ("-f", str(path))]
        done = subprocess.run([*compose_command(), "-p", self.project, *files, *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout_s)
        assert done.returncode == 0 or not check, f"compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done

    def health(self) -> dict[str, str]:
        """Each service's health (``healthy``, ``starting``, ``unhealthy``, or the state without a check)."""
        ids = self.compose("ps", "-q").stdout.split()
        if not ids:
            return {}
        found = json.loads(subprocess.run([DOCKER, "inspect", *ids], capture_output=True, text=True, check=True).stdout)
        return {c["Config"]["Labels"]["com.docker.compose.service"]:
                (c["State"].get("Health") or {}).get("Status", c["State"]["Status"]) for c in found}

    def wait_healthy(self, services: set[str], timeout_s: float) -> float:
        """Seconds until every service in ``services`` is healthy; fails on unhealthy or timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            health = self.health()
            bad = {name for name, status in health.items() if status in {"unhealthy", "exited", "dead"}}
            assert not bad, f"{bad} failed: {health}\n{self.logs(*bad)}"
            if all(health.get(name) == "healthy" for name in services):
                return time.monotonic() - start
            time.sleep(2)
        raise AssertionError(f"not healthy within {timeout_s:.0f} s: {self.health()}\n{self.logs()}")

    def logs(self, *services: str, tail: int = 60) -> str:
        return self.compose("logs", "--no-color", f"--tail={tail}", *services, check=False).stdout[-8000:]

    def exec(self, service: str, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *argv, timeout_s=timeout_s, check=False)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", timeout_s=300, check=False)


def write_source(folder: Path, seed: int, photos: int = 160) -> list[Path]:
    """The team's incoming data as the worker's retrain source reads it: demo photos with their
    engagement, as files and a manifest (image paths relative to it)."""
    rows, paths = [], []
    for i, item in enumerate(DemoSource(n=photos, seed=seed, size=128, users=20).items()):
        path = folder / f"s{seed}-{i:04d}.jpg"
        path.write_bytes(item.data)
        paths.append(path)
        rows.append({"image": path.name, **{k: item.fields[k] for k in ("user_id", "likes", "followers", "posted_at")}})
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return paths


@dataclass
class HttpFolder:
    """A folder served read-only over HTTP on loopback (``python -m http.server``): the wheelhouse, for
    an image build on the host's network (`bentoml containerize --opt network=host`)."""

    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def http_folder(folder: Path) -> HttpFolder:
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                "--directory", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return HttpFolder(process, url)
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"http.server on {folder} did not answer")

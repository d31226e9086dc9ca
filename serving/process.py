"""Run the BentoML service as a child process: start, wait until ready, stop by process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on 127.0.0.1, else one the kernel picks."""
    with socket.socket() as probe:
        if preferred and probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, host: str = "127.0.0.1", port: int = 3000, log_path: Path | None = None,
                 env: dict[str, str] | None = None, bento: str | None = None, cwd: Path | None = None):
        """Serves this checkout's service, or the built Bento tagged ``bento``."""
        self.host, self.port = host, free_port(port)
        self.target = [bento] if bento else ["serving.service:Popularity", "--working-dir", str(REPO)]
        self.cwd = cwd
        self.url = f"http://{host}:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> ServiceProcess:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", *self.target, "--host", self.host, "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, cwd=self.cwd,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with code {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"the service was not ready on {self.url} after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

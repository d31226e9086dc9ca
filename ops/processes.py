"""Servers as child processes: start one in its own process group, wait until its health URL answers,
stop it with its children. The service (``popularity serve`` too, by exec), the Prefect server, the
MLflow server and the UIs of ``popularity ui`` all start here."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

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


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """Run in the child before exec: the kernel sends it SIGTERM when its parent dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A server in its own process group, so that stopping it stops its workers too; its output goes
    to ``log_path`` so that a failed start can say why (``None``: to this process's terminal)."""

    def __init__(self, name: str, args: list[str], log_path: Path | None, env: dict[str, str] | None = None,
                 cwd: Path | None = REPO, die_with_parent: bool = False):
        self.name, self.args, self.log_path, self.cwd = name, args, log_path, cwd
        self.env = dict(os.environ) if env is None else env
        self.die_with_parent = die_with_parent and sys.platform == "linux"
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def start(self) -> ManagedProcess:
        if self.log_path is None:
            self._spawn(None)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._spawn(log)
        return self

    def _spawn(self, log) -> None:
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT if log else None,
                                      cwd=self.cwd, start_new_session=True,
                                      # one prctl call, no lock taken: safe beside threads
                                      preexec_fn=_die_with_parent if self.die_with_parent else None)  # noqa: PLW1509

    def log(self, tail: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-tail:]

    def wait_healthy(self, url: str, timeout_s: float = 180) -> None:
        """Poll ``url`` until it answers 200; a process that exits or a timeout stops it and says why."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.popen.returncode}; see {self.log_path}:\n"
                                   f"{self.log()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.name} was not healthy at {url} after {timeout_s:.0f} s; see {self.log_path}:\n"
                           f"{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = 20) -> None:
        if self.popen:
            stop_group(self.popen, sig, grace_s)


def stop_group(popen: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 20) -> None:
    """Stop a process started in a session of its own, and its children (see :func:`stop_groups`)."""
    if popen.poll() is None:
        stop_groups({popen.pid: lambda: popen.poll() is None}, sig, grace_s)
        popen.wait()


AGAIN_S = 5.0  # a leader with nothing left in progress this long after the signal gets it once more


def stop_groups(leaders: dict[int, Callable[[], bool]], sig: int = signal.SIGTERM, grace_s: float = 20) -> None:
    """Stop processes that lead process groups of their own, given as ``{pid: is_it_alive}``: ``sig`` to every
    group at once; a leader still running ``AGAIN_S`` later with no child left gets ``sig`` once more;
    SIGKILL to the groups still alive after ``grace_s`` (a niced worker on a loaded machine can take long).

    The second signal is Prefect's own "stop now" for its worker, which waits for the flow runs in progress
    (its children) but now and then misses a first signal that arrives while it starts or reports a finished
    run, and would otherwise hold ``stack down`` for the whole grace period."""
    for pid in leaders:
        _signal(pid, sig, group=True)
    start, repeated = time.monotonic(), set()
    while (running := [pid for pid, alive in leaders.items() if alive()]) and time.monotonic() - start < grace_s:
        if time.monotonic() - start >= AGAIN_S:
            for pid in set(running) - repeated:
                if not _children(pid):
                    _signal(pid, sig)
                    repeated.add(pid)
        time.sleep(0.1)
    for pid in running:
        _signal(pid, signal.SIGKILL, group=True)


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children()
    except psutil.Error:
        return []


def service_args(host: str, port: int, bento: str | None = None) -> list[str]:
    """``bentoml serve`` of this checkout's service, or of the built Bento tagged ``bento``, with its
    process manager's control channel on Unix sockets only its user reaches (``serving/launch.py``, run
    as a file: it imports nothing of this checkout's ``serving``, so a Bento runs its own copy)."""
    target = [bento] if bento else ["serving.service:Popularity", "--working-dir", str(REPO)]
    return [sys.executable, str(REPO / "serving" / "launch.py"), *target, "--host", host, "--port", str(port)]


def exec_service(host: str, port: int) -> NoReturn:
    """Replace this process with the service (``popularity serve``): exec, not a child, because as a
    container's PID 1 BentoML itself must get SIGTERM."""
    args = service_args(host, port)
    os.execv(args[0], args)


class ServiceProcess(ManagedProcess):
    """The BentoML service of this checkout, or the built Bento tagged ``bento``, ready once ``/readyz`` is."""

    def __init__(self, host: str = "127.0.0.1", port: int = 3000, log_path: Path | None = None,
                 env: dict[str, str] | None = None, bento: str | None = None, cwd: Path | None = None):
        self.host, self.port = host, free_port(port)
        self.url = f"http://{host}:{self.port}"
        log_path = log_path or Path(os.devnull)
        super().__init__("service", service_args(host, self.port, bento), log_path, {**os.environ, **(env or {})}, cwd)

    def start(self, timeout_s: float = 180) -> ServiceProcess:
        super().start()
        self.wait_healthy(f"{self.url}/readyz", timeout_s)
        return self

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def prefect_server(port: int, log_path: Path, env: dict[str, str],
                   die_with_parent: bool = False) -> tuple[ManagedProcess, str]:
    """``prefect server start`` on 127.0.0.1:``port``, healthy; returns it and its API URL."""
    server = ManagedProcess("prefect-server", [sys.executable, "-m", "prefect", "server", "start",
                                               "--host", "127.0.0.1", "--port", str(port)], log_path, env,
                            die_with_parent=die_with_parent).start()
    url = f"http://127.0.0.1:{port}/api"
    server.wait_healthy(f"{url}/health")
    return server, url


# MLflow's job runner (seven huey consumers for GenAI evaluation jobs) stays off: the stack runs none, and
# each consumer costs a Python start and 250 MB. The compose file and the manifests set the same.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server(backend_uri: str, artifacts: Path, port: int, log_path: Path,
                  env: dict[str, str]) -> tuple[ManagedProcess, str]:
    """``mlflow server`` with proxied artifacts on 127.0.0.1:``port``, healthy; returns it and its URL."""
    server = ManagedProcess("mlflow", [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                                       "--serve-artifacts", "--artifacts-destination", artifacts.as_uri(),
                                       "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            log_path, {**env, **MLFLOW_SERVER_ENV}).start()
    url = f"http://127.0.0.1:{port}"
    server.wait_healthy(f"{url}/health")
    return server, url


def ui_servers(tracking_uri: str, mlflow_port: int, prefect_port: int) -> list[ManagedProcess]:
    """``popularity ui``: the MLflow UI on ``tracking_uri`` and the Prefect UI (this home's Prefect
    database) on 127.0.0.1, started, their output on this terminal; they stop if this process dies."""
    mlflow_ui = ManagedProcess("mlflow-ui", [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
                                             "--host", "127.0.0.1", "--port", str(mlflow_port)],
                               None, cwd=None, die_with_parent=True)
    prefect_ui = ManagedProcess("prefect-ui", [sys.executable, "-m", "prefect", "server", "start",
                                               "--host", "127.0.0.1", "--port", str(prefect_port)],
                                None, cwd=None, die_with_parent=True)
    return [mlflow_ui.start(), prefect_ui.start()]


def wait_all(processes: list[ManagedProcess]) -> None:
    """Wait until every process has exited; Ctrl-C stops them all, with their children."""
    try:
        for process in processes:
            process.popen.wait()
    except KeyboardInterrupt:
        for process in processes:
            process.stop()

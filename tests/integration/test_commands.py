"""Commands run as a user runs them, on real flows: what a flag says reaches the flow, and the exit code
tells a script what happened."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from mlflow import MlflowClient

from tests.helpers import photo

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_promote_exits_1_when_the_gate_refuses(champion_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(champion_home, home)  # the gate writes its verdict on the version: leave the shared one alone
    env = {**os.environ, "POPULARITY_HOME": str(home), "POPULARITY_PROMOTION__FLOOR_ROC_AUC": "1.01"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, "-m", "cli", "promote", "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["promoted"] is False and summary["checks"]["floor"] is False
    assert summary["kind"] == "refused" and "floor" in summary["error"]
    version = MlflowClient(f"sqlite:///{home / 'mlflow.db'}").get_model_version("popularity-binary", summary["version"])
    assert version.tags["gate"] == "failed" and "floor" in version.tags["gate_reason"]


def test_collect_allow_outside_paths_reaches_the_source(tmp_path):
    """A manifest naming a photo beside its folder: refused by default, collected with the flag."""
    (tmp_path / "0.jpg").write_bytes(photo(0))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "1.jpg").write_bytes(photo(1))
    (tmp_path / "m" / "rows.csv").write_text("image,likes\n1.jpg,3\n../0.jpg,5\n")
    env = {**os.environ, "POPULARITY_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    runs = {}
    for flag in ([], ["--allow-outside-paths"]):
        done = subprocess.run([sys.executable, "-m", "cli", "collect", "--source",
                               f"manifest:{tmp_path / 'm' / 'rows.csv'}", "--label", "likes", *flag, "--json"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[bool(flag)] = json.loads(done.stdout.strip().splitlines()[-1])
    assert runs[False]["items"] == 1 and runs[False]["reject_reasons"] == {"outside_manifest_folder": 1}
    assert runs[True]["items"] == 2 and runs[True]["rejects"] == 0


def test_flow_commands_reuse_the_prefect_server_that_prefect_up_left_running(tmp_path):
    """`popularity prefect up` once; a later `collect` reports its flow run to that server instead of
    starting a temporary one, and `prefect down` stops it."""
    env = {**os.environ, "POPULARITY_HOME": str(tmp_path / "home")}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(var, None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args, "--json"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    up = cli("prefect", "up")
    assert up.returncode == 0, up.stderr[-2000:]
    api = json.loads(up.stdout.strip().splitlines()[-1])["url"]
    try:
        collected = cli("collect", "--source", "demo:12")
        assert collected.returncode == 0, collected.stderr[-2000:]
        assert "temporary server" not in collected.stderr
        runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 10, "offset": 0, "sort": "ID_DESC"}).json()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
    finally:
        down = cli("prefect", "down")
    assert down.returncode == 0 and json.loads(down.stdout.strip().splitlines()[-1])["stopped"] is True
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)


def test_a_flow_command_killed_with_sigkill_leaves_no_prefect_server_behind(tmp_path):
    """With no server running, `collect` starts a temporary one; SIGKILL of the command stops it too."""
    env = {**os.environ, "POPULARITY_HOME": str(tmp_path / "home")}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"):
        env.pop(var, None)
    command = subprocess.Popen([sys.executable, "-m", "cli", "collect", "--source", "demo:3000"], env=env,
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        servers: list[psutil.Process] = []
        while not servers and time.monotonic() < deadline and command.poll() is None:
            servers = [p for p in psutil.Process(command.pid).children(recursive=True)
                       if "server" in p.cmdline() and "prefect" in " ".join(p.cmdline())]
            time.sleep(0.2)
        assert servers, "collect started no Prefect server of its own"
        time.sleep(3)  # the server is up and the flow under way
        command.kill()
        command.wait()
        _, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"orphaned: {[p.cmdline() for p in alive]}"
    finally:
        command.kill()

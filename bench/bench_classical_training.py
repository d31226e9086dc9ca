"""A classical retrain's cost with the machine's graph cache cold and warm.

``popularity train --quick --models stats-gb`` on one collected demo snapshot, as a retrain runs it (a
fresh process), alternating between an empty ``POPULARITY_CACHE_DIR`` (the machine's first training: it
exports the drift profile's ImageNet trunk to ONNX, checks it against torch, and so imports torch) and a
filled one (every later training: the graph is read back and torch is never imported). Each round
reports wall seconds, CPU seconds of the process and whether it imported torch (``-X importtime``); the
medians and their ratio come last, as JSON. Both sides run the same code in the same run, reporting to one
Prefect server started for the bench (as ``popularity prefect up`` leaves one), so that no temporary
server's start is in the figures.

    python bench/bench_classical_training.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from ops.processes import free_port, prefect_server  # noqa: E402


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    cpu, start = _cpu_children(), time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, _cpu_children() - cpu, done.stderr


def _imports_torch(stderr: str) -> bool:
    return any(line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == "torch"
               for line in stderr.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold/warm pairs (medians reported)")
    parser.add_argument("--source", default="demo:120")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {**os.environ, "POPULARITY_HOME": str(root / "home"), "POPULARITY_CACHE_DIR": str(root / "warm"),
               "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "false"}
        for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "BENTOML_HOME"):
            env.pop(var, None)
        server, env["PREFECT_API_URL"] = prefect_server(free_port(), root / "prefect.log", env)
        try:
            results = _rounds(args, root, env)
        finally:
            server.stop()
    summary = {side: {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "cpu_s")}
               | {"torch": [r["torch"] for r in rows]} for side, rows in results.items()}
    summary["warm_over_cold"] = {k: round(summary["warm"][k] / summary["cold"][k], 3) for k in ("wall_s", "cpu_s")}
    print(json.dumps(summary))
    return 0 if not any(summary["warm"]["torch"]) else 1


def _rounds(args, root: Path, env: dict[str, str]) -> dict[str, list[dict]]:
    _run(["collect", "--source", args.source], env)
    _run(["train", "--quick", "--models", "stats-gb"], env)  # fills the warm cache
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    for i in range(args.rounds):
        for side in ("cold", "warm"):
            cache = root / side
            if side == "cold":
                shutil.rmtree(cache, ignore_errors=True)
            wall, cpu, stderr = _run(["train", "--quick", "--models", "stats-gb"],
                                     {**env, "POPULARITY_CACHE_DIR": str(cache)})
            row = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "torch": _imports_torch(stderr)}
            results[side].append(row)
            print(f"round {i + 1} {side}: {row}", flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())

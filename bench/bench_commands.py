"""Command latency: how long a user waits for an answer, beside ``python -c "import mlflow"``.

Each command runs as a user runs it (a fresh ``python -m cli`` process, the home under a
temporary folder), ``--repeats`` times; the median is reported with its ratio to importing mlflow
(goal ≤ 2× for usage errors and read-only commands). ``collect demo:100`` is timed twice: with the
temporary Prefect server that a bare home starts, and with the server ``popularity prefect up`` leaves
running. ``predict --url`` talks to a service on the champion that this script trains first
(quick stats-gb on demo:120). The last line is JSON.

    python bench/bench_commands.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from ops.processes import ServiceProcess  # noqa: E402

READ_ONLY_GOAL = 2.0


def timed(args: list[str], env: dict[str, str], expect: int | None = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if expect is not None and done.returncode != expect:
        raise SystemExit(f"{' '.join(args[2:])} exited {done.returncode}, not {expect}:\n{done.stderr[-2000:]}")
    return elapsed


def median_of(repeats: int, args: list[str], env: dict[str, str], expect: int | None = 0) -> float:
    return statistics.median(timed(args, env, expect) for _ in range(repeats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="Runs per command (the median is reported).")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "cli"]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "POPULARITY_HOME": str(home),
               "POPULARITY_PROMOTION__FLIP_TOLERANCE": "100", "POPULARITY_PROMOTION__JPEG_TOLERANCE": "100"}
        for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
            env.pop(var, None)
        for step in (["collect", "--source", "demo:120"], ["train", "--quick", "--models", "stats-gb"], ["promote"]):
            timed(cli + step, env)
        image = Path(tmp) / "photo.jpg"
        Image.fromarray(data.astronaut()).save(image, quality=90)
        rows = {"import mlflow": median_of(args.repeats, [sys.executable, "-c", "import mlflow"], env)}
        rows["usage error (train --models nope)"] = median_of(args.repeats, cli + ["train", "--models", "nope"], env, 2)
        rows["model --json"] = median_of(args.repeats, cli + ["model", "--json"], env)
        with ServiceProcess(port=0, env=env) as service:
            rows["predict --url"] = median_of(args.repeats, cli + ["predict", "--url", service.url, str(image)], env)
        rows["collect demo:100 (temporary Prefect server)"] = median_of(
            args.repeats, cli + ["collect", "--source", "demo:100"], env)
        timed(cli + ["prefect", "up"], env)
        try:
            rows["collect demo:100 (prefect up)"] = median_of(args.repeats, cli + ["collect", "--source", "demo:100"],
                                                              env)
        finally:
            timed(cli + ["prefect", "down"], env)
    base = rows["import mlflow"]
    print(f"{'command':<48}{'median s':>10}{'÷ import mlflow':>18}")
    for name, seconds in rows.items():
        print(f"{name:<48}{seconds:>10.2f}{seconds / base:>17.2f}×")
    read_only = ("usage error (train --models nope)", "model --json", "predict --url")
    ok = all(rows[name] <= READ_ONLY_GOAL * base for name in read_only)
    print(f"usage errors and read-only commands within {READ_ONLY_GOAL:.0f}× import mlflow: {'yes' if ok else 'NO'}")
    print(json.dumps({"repeats": args.repeats, "seconds": rows, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

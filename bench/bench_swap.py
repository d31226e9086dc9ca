"""The production loop's numbers: how long a promotion takes to reach every serving replica, how many
requests fail during the swap, and how fast the monitor reads a window from the shared request store.

Two replicas of the service (as `popularity serve` runs them: the default watch interval unless
``--interval`` is given) serve one champion while 32 clients post photographs; the champion alias is
moved between two registered versions ``--swaps`` times, and for each move the bench records when
the last replica answered with the new version. Then 10,000 request records go into a fresh
PostgreSQL table and the monitor's window query is timed against reading the same records from the
one-machine JSON Lines log (the baseline, measured in the same run).

    python bench/bench_swap.py --swaps 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ops.processes import ServiceProcess
from tests import postgres
from tests.helpers import photo

SETUP = """
from flows.data_flows import collect_flow
from flows.training_flows import promote_flow, train_flow
collect_flow(source="demo:120")
for models in (["stats-gb"], ["colors-svm"]):
    train_flow(quick=True, models=models)
    promote_flow()
"""
CLIENTS = 32


def two_versions(home: Path) -> None:
    """A registry with two versions of popularity-binary (the gate relaxed: the bench moves the alias)."""
    env = {**os.environ, "POPULARITY_HOME": str(home), "POPULARITY_PROMOTION__MARGIN": "-1",
           "POPULARITY_PROMOTION__FLOOR_ROC_AUC": "0", "POPULARITY_PROMOTION__FLIP_TOLERANCE": "100",
           "POPULARITY_PROMOTION__JPEG_TOLERANCE": "100"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-c", SETUP], env=env, check=True, capture_output=True)


def swaps(home: Path, count: int, interval: float | None) -> None:
    from mlflow import MlflowClient

    registry = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    env = {"POPULARITY_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    if interval is not None:
        env["POPULARITY_SERVING__WATCH_INTERVAL_S"] = str(interval)
    replicas = [ServiceProcess(port=0, env=env, log_path=home / f"replica-{i}.log") for i in range(2)]
    for replica in replicas:
        replica.start()
    answers: list[tuple[int, float, int, str | None]] = []  # (replica, time, status, version)
    stop = threading.Event()
    images = [photo(k) for k in range(16)]

    def client(k: int) -> None:
        index = k % len(replicas)
        with httpx.Client(base_url=replicas[index].url, timeout=120) as session:
            i = k
            while not stop.is_set():
                r = session.post("/predict", files={"image": ("p.jpg", images[i % len(images)])})
                answers.append((index, time.monotonic(), r.status_code,
                                r.json().get("version") if r.status_code == 200 else None))
                i += CLIENTS

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    delays = []
    try:
        time.sleep(5)
        for n in range(count):
            target = "1" if str(registry.get_model_version_by_alias("popularity-binary", "champion").version) == "2" \
                else "2"
            registry.set_registered_model_alias("popularity-binary", "champion", target)
            promoted = time.monotonic()
            reached: dict[int, float] = {}
            while len(reached) < len(replicas):
                for replica, at, _, version in answers[-4 * CLIENTS:]:
                    if version == target and at >= promoted and replica not in reached:
                        reached[replica] = at
                assert time.monotonic() - promoted < 300, "a replica never moved to the new champion"
                time.sleep(0.05)
            delays.append(max(reached.values()) - promoted)
            print(f"swap {n + 1}: v{target} on every replica after {delays[-1]:.2f} s", flush=True)
            time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
        for replica in replicas:
            replica.stop()
    failed = sum(status != 200 for _, _, status, _ in answers)
    print(f"promotion → every replica (watch interval {interval if interval is not None else 'default'} s): "
          f"median {np.median(delays):.2f} s, max {max(delays):.2f} s over {count} swaps; "
          f"failed requests during the swaps: {failed} of {len(answers)} ({CLIENTS} clients, 2 replicas)")


def monitor_query(rows: int = 10_000, repeats: int = 5) -> None:
    from monitoring.request_log import RequestLog
    from monitoring.request_store import SqlRequestStore, engine

    rng = np.random.default_rng(0)
    features = [f"f{i}" for i in range(14)] + [f"pca_{i}" for i in range(1, 9)]
    records = [{"ts": float(i), "version": "1", "score": float(rng.random()), "label": int(rng.integers(2)),
                **{f: float(v) for f, v in zip(features, rng.random(len(features)))}} for i in range(rows)]
    database = postgres.create_database("popularity_bench")
    try:
        store = SqlRequestStore(postgres.url(database))
        with tempfile.TemporaryDirectory() as folder:
            log = RequestLog(Path(folder), 10**9, 1)
            for k in range(0, rows, 1000):
                store.append(records[k:k + 1000])
                log.append(records[k:k + 1000])
            timings = {}
            for name, source in (("JSON Lines log (baseline)", log), ("PostgreSQL table", store)):
                spent = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    window = source.read(last=rows, version="1")
                    spent.append(time.perf_counter() - start)
                assert len(window) == rows
                timings[name] = float(np.median(spent))
                print(f"{name}: a window of {rows} requests in {timings[name] * 1000:.0f} ms (median of {repeats})")
        print(f"shared store ÷ local log: {timings['PostgreSQL table'] / timings['JSON Lines log (baseline)']:.2f}×")
    finally:
        engine.cache_clear()
        postgres.drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--interval", type=float, default=None, help="watch interval (default: the setting's)")
    args = parser.parse_args()
    if not postgres.postgres_available():
        sys.exit(f"bench_swap needs PostgreSQL: {postgres.SKIP_REASON}")
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder) / "home"
        two_versions(home)
        swaps(home, args.swaps, args.interval)
    monitor_query()


if __name__ == "__main__":
    main()

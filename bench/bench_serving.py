"""Serving throughput: adaptive batching vs batching off vs seed 000's load-predict-exit per image.

N concurrent clients post real photographs to ``/predict`` on 127.0.0.1 for T seconds (bounded), against
the same champion and images each way, in R alternating rounds; prints rps, p50/p95/p99 latency and
errors of each round, the batching ÷ batching-off ratios over the rounds (min and median), and the
served rate ÷ the same model's batched forward pass in process (the ceiling). The last line is JSON.
Needs a champion in ``POPULARITY_HOME`` (``popularity run``, or collect/train/promote).

    python bench/bench_serving.py --clients 32 --seconds 15 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ops.processes import ServiceProcess  # noqa: E402
from pipelines.settings import get_settings  # noqa: E402


def photographs() -> list[bytes]:
    from skimage import data

    out = []
    for array in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.cat()):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def summary(name: str, latencies: list[float], errors: int, seconds: float) -> dict:
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    row = {"way": name, "requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
           "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
           "p99_ms": float(np.percentile(lat, 99))}
    print(f"{name:>16}: {row['rps']:7.2f} req/s  p50 {row['p50_ms']:7.1f} ms  p95 {row['p95_ms']:7.1f} ms  "
          f"p99 {row['p99_ms']:7.1f} ms  errors {errors}/{len(latencies) + errors}", flush=True)
    return row


async def load(url: str, images: list[bytes], clients: int, seconds: float) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients)
    headers = {"X-API-Key": os.environ["POPULARITY_API_KEY"]} if os.environ.get("POPULARITY_API_KEY") else {}

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        n = i
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                r = await http.post("/predict", files={"image": ("p.jpg", images[n % len(images)])}, headers=headers)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1
            n += 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return latencies, errors, seconds  # the window, so one slow straggler does not stretch it


def served(runs: int, images: list[bytes], args) -> list[tuple[dict, dict]]:
    """``runs`` rounds of load on a batching service, then on one with batching off, both running
    throughout so that the rounds alternate and share the machine's ups and downs."""
    on_env, off_env = ({"POPULARITY_SERVING__BATCHING": value} for value in ("true", "false"))
    with (ServiceProcess(port=0, env=on_env, log_path=Path(args.log)) as on,
          ServiceProcess(port=0, env=off_env, log_path=Path(args.log).with_suffix(".off.log")) as off):
        for svc in (on, off):
            asyncio.run(load(svc.url, images, args.clients, 3))  # warm-up
        rounds = []
        for run in range(1, runs + 1):
            print(f"run {run}/{runs}", flush=True)
            rounds.append(tuple(summary(name, *asyncio.run(load(svc.url, images, args.clients, args.seconds)))
                                for name, svc in (("adaptive batching", on), ("batching off", off))))
    return rounds


def in_process(images: list[bytes], batch: int, seconds: float) -> dict:
    """The champion's batched forward pass in this process, on the same photographs decoded as the
    service decodes them, with every image profiled for drift as the service does at low load: the
    ceiling that serving overhead (HTTP, decoding, batching) is measured against."""
    from pipelines import registry
    from pipelines.settings import load_settings
    from serving.uploads import decode_upload

    settings = load_settings()
    model, _ = registry.load_model(settings.task, settings)
    decoded = [decode_upload(b, settings) for b in images]
    batch_images = [decoded[i % len(decoded)] for i in range(batch)]
    model.predict_images(batch_images)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict_images(batch_images)
        model.profile_images(batch_images)
        done += batch
    rate = done / (time.perf_counter() - start)
    print(f"{'in-process':>16}: {rate:7.2f} images/s (batches of {batch}, forward pass + drift profile)", flush=True)
    return {"way": "in-process", "rps": rate, "batch": batch}


def naive(images: list[bytes], args, tmp: Path) -> dict:
    """Seed 000's way: a fresh process loads the model, scores one image and exits (``popularity predict
    IMAGE``, in process)."""
    latencies, errors = [], 0
    begin = time.perf_counter()
    for i in range(args.naive_images):
        path = tmp / f"{i}.jpg"
        path.write_bytes(images[i % len(images)])
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "cli", "predict", str(path)], capture_output=True,
                              cwd=Path(__file__).resolve().parents[1])
        if done.returncode == 0:
            latencies.append(time.perf_counter() - start)
        else:
            errors += 1
    return summary("naive per-image", latencies, errors, time.perf_counter() - begin)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--runs", type=int, default=5, help="Alternating rounds of batching on and off.")
    parser.add_argument("--naive-images", type=int, default=3)
    parser.add_argument("--log", default="/tmp/popularity-bench-service.log")
    args = parser.parse_args()
    import tempfile

    images = photographs()
    print(f"{args.clients} concurrent clients, {args.seconds:.0f} s a round, {args.runs} rounds each way, "
          f"{len(images)} photographs")
    ceiling = in_process(images, get_settings().serving.max_batch_size, args.seconds)
    rounds = served(args.runs, images, args)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = naive(images, args, Path(tmp))
    speedups = [on["rps"] / max(off["rps"], 1e-9) for on, off in rounds]
    p99s = [on["p99_ms"] / max(off["p99_ms"], 1e-9) for on, off in rounds]
    served_share = [on["rps"] / ceiling["rps"] for on, _ in rounds]
    best = max(on["rps"] for on, _ in rounds)
    print(f"batching / off over {args.runs} runs: min {min(speedups):.2f}x, median {statistics.median(speedups):.2f}x "
          f"(goal >= 2x in every run); p99 batching / off: max {max(p99s):.2f}, median {statistics.median(p99s):.2f}")
    print(f"served / in-process: min {min(served_share):.2f}, median {statistics.median(served_share):.2f} (goal >= 0.5)")
    print(f"batching / naive: {best / max(baseline['rps'], 1e-9):.1f}x")
    ok = min(speedups) >= 2 and max(p99s) <= 1 and statistics.median(served_share) >= 0.5
    print(json.dumps({"runs": args.runs, "clients": args.clients, "seconds": args.seconds,
                      "speedups": speedups, "p99_ratios": p99s, "served_over_in_process": served_share,
                      "in_process_rps": ceiling["rps"], "naive_rps": baseline["rps"], "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

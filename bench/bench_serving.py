"""Serving throughput: adaptive batching vs batching off vs seed 000's load-predict-exit per image.

N concurrent clients post real photographs to ``/predict`` on 127.0.0.1 for T seconds (bounded), against
the same champion and images each way; prints rps, p50/p95/p99 latency, errors and the ratios.
Needs a champion in ``POPULARITY_HOME`` (``popularity run``, or collect/train/promote).

    python bench/bench_serving.py --clients 32 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.processes import ServiceProcess  # noqa: E402

NAIVE = """
import sys, io, mlflow
from PIL import Image
from pipelines.settings import get_settings
s = get_settings(); s.export_environment()
model = mlflow.pyfunc.load_model(f"models:/{s.model_name()}@champion").unwrap_python_model()
print(float(model.predict_images([Image.open(sys.argv[1]).convert("RGB")])["score"][0]))
"""


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


def served(name: str, batching: bool, images: list[bytes], args) -> dict:
    env = {"POPULARITY_SERVING__BATCHING": str(batching).lower()}
    with ServiceProcess(port=0, env=env, log_path=Path(args.log)) as svc:
        asyncio.run(load(svc.url, images, args.clients, 3))  # warm-up
        latencies, errors, seconds = asyncio.run(load(svc.url, images, args.clients, args.seconds))
    return summary(name, latencies, errors, seconds)


def naive(images: list[bytes], args, tmp: Path) -> dict:
    """Seed 000's way: a fresh process loads the model, scores one image and exits."""
    latencies, errors = [], 0
    begin = time.perf_counter()
    for i in range(args.naive_images):
        path = tmp / f"{i}.jpg"
        path.write_bytes(images[i % len(images)])
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", NAIVE, str(path)], capture_output=True,
                              cwd=Path(__file__).resolve().parents[1])
        if done.returncode == 0:
            latencies.append(time.perf_counter() - start)
        else:
            errors += 1
    return summary("naive per-image", latencies, errors, time.perf_counter() - begin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--naive-images", type=int, default=3)
    parser.add_argument("--log", default="/tmp/popularity-bench-service.log")
    args = parser.parse_args()
    import tempfile

    images = photographs()
    print(f"{args.clients} concurrent clients, {args.seconds:.0f} s each way, {len(images)} photographs")
    batched = served("adaptive batching", True, images, args)
    single = served("batching off", False, images, args)
    with tempfile.TemporaryDirectory() as tmp:
        baseline = naive(images, args, Path(tmp))
    print(f"throughput: batching / off = {batched['rps'] / max(single['rps'], 1e-9):.2f}x, "
          f"batching / naive = {batched['rps'] / max(baseline['rps'], 1e-9):.1f}x")
    print(f"p99: batching / off = {batched['p99_ms'] / max(single['p99_ms'], 1e-9):.2f}")


if __name__ == "__main__":
    main()

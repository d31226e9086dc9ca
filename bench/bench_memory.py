"""Serving memory under the worst uploads: 8 concurrent 16-bit PNGs (and 8 JPEGs) just under the
serving pixel cap, against the service's idle footprint.

The service runs as in production (``bentoml serve``, both workers); the footprint is the resident
memory of its whole process tree, sampled every 20 ms. The last line is JSON; the exit status says
whether the peak growth stays under the goal (1 GB).

    python bench/bench_memory.py [--home HOME_WITH_A_CHAMPION]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.champion import train_champion  # noqa: E402
from ops.processes import ServiceProcess  # noqa: E402
from pipelines.settings import get_settings  # noqa: E402

GOAL_BYTES = 1024**3
MB = 1024 * 1024


def worst_uploads(max_pixels: int) -> dict[str, bytes]:
    """A 16-bit greyscale PNG and a JPEG with just under ``max_pixels`` pixels: smooth, so their files
    stay small while their decoded pixels are as many as the service admits."""
    side = int(max_pixels**0.5) - 1
    ramp = np.add.outer(np.arange(side, dtype=np.uint32), np.arange(side, dtype=np.uint32))
    uploads = {}
    buffer = io.BytesIO()
    Image.fromarray((ramp * 65535 // ramp.max()).astype(np.uint16)).save(buffer, format="PNG")
    uploads["16-bit PNG"] = buffer.getvalue()
    buffer = io.BytesIO()
    grey = (ramp * 255 // ramp.max()).astype(np.uint8)
    Image.fromarray(np.stack([grey, grey[::-1], grey.T], axis=-1)).save(buffer, format="JPEG", quality=90)
    uploads["JPEG"] = buffer.getvalue()
    return uploads


def tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def peak_during(pid: int, work) -> tuple[int, object]:
    """The tree's highest resident memory while ``work()`` runs, and what it returned."""
    peak, done = [tree_rss(pid)], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(max(peak[-1], tree_rss(pid)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return max(peak), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="A home with a champion (default: train one in a temp home).")
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            train_champion(home, "demo:300")
        serving = get_settings().serving
        uploads = worst_uploads(serving.max_pixels)
        env = {"POPULARITY_HOME": str(home), "POPULARITY_SERVING__WATCH_INTERVAL_S": "0"}
        with ServiceProcess(port=0, env=env) as service, httpx.Client(timeout=300) as client:
            warm = client.post(f"{service.url}/predict", files={"image": ("warm.jpg", uploads["JPEG"])})
            assert warm.status_code == 200, warm.text
            time.sleep(2)
            idle = tree_rss(service.pid)
            rows = {}
            for name, data in uploads.items():
                def burst(data=data, name=name) -> list[int]:
                    with ThreadPoolExecutor(args.concurrent) as pool:
                        return list(pool.map(lambda i: client.post(
                            f"{service.url}/predict", files={"image": (f"{i}.img", data)}).status_code,
                            range(args.concurrent)))

                started = time.perf_counter()
                peak, statuses = peak_during(service.pid, burst)
                rows[name] = {"file_kb": round(len(data) / 1024), "statuses": sorted(set(statuses)),
                              "peak_mb": round(peak / MB), "growth_mb": round((peak - idle) / MB),
                              "seconds": round(time.perf_counter() - started, 1)}
                time.sleep(2)
    print(f"service idle: {idle / MB:.0f} MB (API + scorer + arbiter); cap {serving.max_pixels / 1e6:.0f} MP, "
          f"decoded to fit {get_settings().images.model_side} px, {serving.decode_concurrency} decodes at once")
    for name, row in rows.items():
        print(f"{args.concurrent} x {name} ({row['file_kb']} KB, just under the cap): peak {row['peak_mb']} MB, "
              f"growth {row['growth_mb']} MB over idle ({row['growth_mb'] * MB / idle:.2f}x idle), "
              f"{row['seconds']} s, statuses {row['statuses']}")
    ok = all(row["growth_mb"] * MB < GOAL_BYTES and row["statuses"] == [200] for row in rows.values())
    print(json.dumps({"idle_mb": round(idle / MB), "concurrent": args.concurrent, "uploads": rows,
                      "goal_growth_mb": GOAL_BYTES // MB, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

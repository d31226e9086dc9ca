"""Serving memory under the worst uploads of every accepted format, 8 at once, against the service's idle
footprint, and what is left of it once the load is over.

The uploads, each just under its cap: a 16-bit greyscale PNG of 16 MP (the serving pixel cap), a baseline
and a progressive JPEG of 50 MP (the JPEG cap), a JPEG carrying a 15 MB ICC profile, a lossless WebP and a
GIF of 16 MP, and noise JPEGs of 19.5 MB (just under the 20 MB body cap; also sent 32 at once, a whole
worker's admission). The service runs as in production (``bentoml serve``, both workers); the footprint is
the resident memory of its whole process tree, sampled every 20 ms. Goals (issue 27): each burst grows it
by at most 500 MB over idle, and 10 s after the last burst it is back within 200 MB of idle. The last
line is JSON; the exit status says whether both goals hold.

    python bench/bench_memory.py [--home HOME_WITH_A_CHAMPION] [--only NAME,...]
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
from bench.champion import STABILITY_RELAXED, train_champion  # noqa: E402
from ops.processes import ServiceProcess  # noqa: E402
from pipelines.settings import get_settings  # noqa: E402

MB = 1024 * 1024
GROWTH_GOAL_MB, SETTLED_GOAL_MB, SETTLE_S = 500, 200, 10.0


def _ramp(side_w: int, side_h: int) -> np.ndarray:
    return np.add.outer(np.arange(side_h, dtype=np.uint32), np.arange(side_w, dtype=np.uint32))


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _colour(side_w: int, side_h: int) -> Image.Image:
    ramp = _ramp(side_w, side_h)
    grey = (ramp * 255 // ramp.max()).astype(np.uint8)
    return Image.fromarray(np.stack([grey, grey[:, ::-1], (grey // 2 + 64)], axis=-1))


def worst_uploads(max_pixels: int, max_jpeg_pixels: int, max_bytes: int) -> dict[str, tuple[bytes, int]]:
    """Each accepted format's worst upload, just under its cap, and how many are sent at once (0: the
    ``--concurrent`` default). Smooth pictures keep most files small while their decoded pixels are as
    many as the service admits; the noise JPEG is as many bytes as it admits."""
    side = int(max_pixels**0.5) - 1
    ramp = _ramp(side, side)
    uploads: dict[str, tuple[bytes, int]] = {}
    uploads["16-bit PNG 16 MP"] = (_save(Image.fromarray((ramp * 65535 // ramp.max()).astype(np.uint16)), "PNG"), 0)
    jpeg_w = int((max_jpeg_pixels * 1.5) ** 0.5) - 8  # 3:2, just under the JPEG cap
    camera = _colour(jpeg_w, int(jpeg_w / 1.5))
    uploads["JPEG 50 MP"] = (_save(camera, "JPEG", quality=90), 0)
    uploads["progressive JPEG 50 MP"] = (_save(camera, "JPEG", quality=90, progressive=True), 0)
    del camera
    icc = np.random.default_rng(0).bytes(15 * MB)
    uploads["JPEG + 15 MB ICC profile"] = (_save(_colour(1024, 768), "JPEG", quality=90, icc_profile=icc), 0)
    square = _colour(side, side)
    uploads["lossless WebP 16 MP"] = (_save(square, "WEBP", lossless=True, quality=0, method=0), 0)
    uploads["GIF 16 MP"] = (_save(square.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF"), 0)
    del square
    noise = _noise_jpeg(int(max_bytes * 0.975))
    uploads["noise JPEG 19.5 MB"] = (noise, 0)
    uploads["noise JPEG 19.5 MB, 32 at once"] = (noise, 32)
    return uploads


def _noise_jpeg(target: int) -> bytes:
    """A JPEG of random pixels just under ``target`` bytes."""
    rng = np.random.default_rng(1)

    def noise(side: int) -> bytes:
        return _save(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)), "JPEG", quality=100)

    side = int(1024 * (target / len(noise(1024))) ** 0.5)
    while len(data := noise(side)) > target:
        side -= 16
    return data


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


def burst(client: httpx.Client, url: str, data: bytes, concurrent: int) -> list[int]:
    """``concurrent`` uploads of ``data`` at once; a 429 (the worker's admission full) is retried, as a
    client told ``Retry-After`` would."""
    def post(i: int) -> int:
        for _ in range(60):
            status = client.post(f"{url}/predict", files={"image": (f"{i}.img", data)}).status_code
            if status != 429:
                return status
            time.sleep(1)
        return 429

    with ThreadPoolExecutor(concurrent) as pool:
        return list(pool.map(post, range(concurrent)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="A home with a champion (default: train one in a temp home).")
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--only", help="Comma-separated upload names (substrings) to run.")
    args = parser.parse_args()
    settings = get_settings()
    serving = settings.serving
    uploads = worst_uploads(serving.max_pixels, serving.max_jpeg_pixels, settings.images.max_bytes)
    if args.only:
        uploads = {k: v for k, v in uploads.items() if any(o.strip() in k for o in args.only.split(","))}
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp) / "home"
        if args.home is None:
            train_champion(home, "demo:300", STABILITY_RELAXED)
        env = {"POPULARITY_HOME": str(home), "POPULARITY_SERVING__WATCH_INTERVAL_S": "0"}
        with ServiceProcess(port=0, env=env) as service, httpx.Client(timeout=300) as client:
            warm = client.post(f"{service.url}/predict", files={"image": ("warm.jpg", _save(_colour(640, 480), "JPEG"))})
            assert warm.status_code == 200, warm.text
            time.sleep(2)
            idle = tree_rss(service.pid)
            rows = {}
            for name, (data, concurrent) in uploads.items():
                concurrent = concurrent or args.concurrent
                started = time.perf_counter()
                peak, statuses = peak_during(service.pid, lambda: burst(client, service.url, data, concurrent))
                rows[name] = {"file_kb": round(len(data) / 1024), "concurrent": concurrent,
                              "statuses": sorted(set(statuses)), "peak_mb": round(peak / MB),
                              "growth_mb": round((peak - idle) / MB), "seconds": round(time.perf_counter() - started, 1)}
                time.sleep(2)
            time.sleep(SETTLE_S)
            settled = tree_rss(service.pid)
    print(f"service idle: {idle / MB:.0f} MB (API + scorer + arbiter); caps {serving.max_pixels / 1e6:.0f} MP, "
          f"JPEG {serving.max_jpeg_pixels / 1e6:.0f} MP, {settings.images.max_bytes / MB:.0f} MB; decoded to fit "
          f"{settings.images.model_side} px, {serving.decode_concurrency} decodes at once")
    for name, row in rows.items():
        print(f"{row['concurrent']} x {name} ({row['file_kb']} KB): peak {row['peak_mb']} MB, growth "
              f"{row['growth_mb']} MB over idle ({row['growth_mb'] / GROWTH_GOAL_MB:.2f}x the goal, "
              f"{row['growth_mb'] * MB / idle:.2f}x idle), {row['seconds']} s, statuses {row['statuses']}")
    left_mb = round((settled - idle) / MB)
    print(f"{SETTLE_S:g} s after the load: {settled / MB:.0f} MB, {left_mb} MB over idle "
          f"({left_mb / SETTLED_GOAL_MB:.2f}x the goal of {SETTLED_GOAL_MB} MB)")
    ok = (all(row["growth_mb"] <= GROWTH_GOAL_MB and row["statuses"] == [200] for row in rows.values())
          and left_mb <= SETTLED_GOAL_MB)
    print(json.dumps({"idle_mb": round(idle / MB), "uploads": rows, "settled_mb": round(settled / MB),
                      "left_over_idle_mb": left_mb, "goal_growth_mb": GROWTH_GOAL_MB,
                      "goal_left_mb": SETTLED_GOAL_MB, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The served CNN champion with ONNX Runtime and with eager torch side by side, idle and beside a training job.

Two services of the same CNN champion run throughout, one with ``POPULARITY_SERVING__RUNTIME=onnx`` and one
with ``=torch``; N concurrent clients post real photographs to ``/predict`` on 127.0.0.1 for T seconds, the
two services taking turns in R rounds, so each round's ratio shares the machine's state. Then:

- **the ceiling**: in the idle rounds a third service, the ONNX one with every network call answered at no
  cost (``bench/ceiling/sitecustomize.py``), takes its turn: its req/s over torch's is the most that any CPU
  runtime of the same networks could give this service here, and the report says how far ONNX Runtime goes
  from torch towards it;
- **idle**: req/s of each and their ratio per round (goal: ONNX Runtime >= 2x torch), p50/p99 and the
  longest wait of each, the same photographs' scores from both services (goal: |Δ| <= 1e-4), and served ÷
  in-process (each runtime's service against its own batched score in this process, with the drift profile
  of the share of images the service profiles at that load);
- **beside a training job**: the same rounds while ``popularity train --models cnn --quick`` runs again and
  again in another process at the worker's niceness (``stack.worker_niceness``, as the single-box stack's
  worker runs its retrains): the share of its idle req/s each service keeps (goal >= 0.5) and the longest
  wait (goal: none past 10 s);
- **GFLOP/s**: the multiply-adds of the champion's forward at its input size (``torch.utils.flop_counter``,
  two views an image with the flip average), times the served images/s, ÷ the machine's GEMM peak measured
  here on the same threads (the best of torch and NumPy float32 matmul, before and after the rounds): the
  distance to the limit. The
  drift profile's network is extra work not counted, so the served figure is a lower bound.

The last line is JSON; the exit status is 0 when every goal is met. Needs a CNN champion in ``--home``
(``--train`` makes a quick one on a demo snapshot there first, about two minutes; kept for later runs).

    python bench/bench_runtime_serving.py --train --home /tmp/runtime-home
    python bench/bench_runtime_serving.py --home /tmp/runtime-home --clients 32 --rounds 3 --seconds 12
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_serving import load, photographs  # noqa: E402
from bench.champion import ANY_CHAMPION, train_champion  # noqa: E402
from ops.processes import ManagedProcess, ServiceProcess  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNTIMES = ("onnx", "torch")
FREE = "free"  # the ceiling: the ONNX service with every network call free (bench/ceiling/sitecustomize.py)


class TrainingJob:
    """``popularity train --models cnn --quick`` in a loop in its own process group at ``niceness``, until stopped."""

    def __init__(self, env: dict[str, str], niceness: int, log: Path):
        self.env, self.niceness, self.log = env, niceness, log
        self.stopping = threading.Event()
        self.current: subprocess.Popen | None = None
        self.finished: list[tuple[int, float]] = []  # (exit status, seconds) of each completed training
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with open(self.log, "ab") as out:
            while not self.stopping.is_set():
                start = time.perf_counter()
                self.current = subprocess.Popen(
                    [sys.executable, "-m", "cli", "train", "--models", "cnn", "--quick"], env=self.env, cwd=REPO,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=lambda: os.nice(self.niceness))  # noqa: PLW1509 (one syscall)
                code = self.current.wait()
                if not self.stopping.is_set():
                    self.finished.append((code, time.perf_counter() - start))

    def __enter__(self) -> TrainingJob:
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        self.thread.start()
        return self

    def wait_training(self, timeout_s: float = 180) -> float:
        """Seconds until the first command is past its start-up (imports, a temporary Prefect server) and its
        train flow has begun, by its log."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.log.exists() and b"Beginning flow run" in self.log.read_bytes()[self.offset:]:
                break
            time.sleep(1)
        return time.perf_counter() - start

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        if self.current is not None and self.current.poll() is None:
            os.killpg(self.current.pid, signal.SIGTERM)
        self.thread.join(timeout=60)


def round_stats(runtime: str, latencies: list[float], errors: int, seconds: float) -> dict:
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    row = {"runtime": runtime, "requests": len(latencies), "errors": errors, "rps": len(latencies) / seconds,
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
           "max_ms": float(lat.max())}
    print(f"  {runtime:>5}: {row['rps']:7.2f} req/s  p50 {row['p50_ms']:7.0f} ms  p99 {row['p99_ms']:7.0f} ms  "
          f"longest {row['max_ms']:7.0f} ms  errors {errors}", flush=True)
    return row


def rounds(services: dict, images: list[bytes], args, label: str,
           names: tuple[str, ...] = RUNTIMES) -> list[dict[str, dict]]:
    out = []
    for r in range(args.rounds):
        print(f"{label} round {r + 1}/{args.rounds} (load average {os.getloadavg()[0]:.1f})", flush=True)
        order = names if r % 2 == 0 else names[::-1]  # who goes first alternates too
        out.append({rt: round_stats(rt, *asyncio.run(load(services[rt].url, images, args.clients, args.seconds)))
                    for rt in order})
    return out


def free_forward_env(env: dict[str, str]) -> dict[str, str]:
    """The ONNX service's environment with the bench's ceiling hook: every network call costs nothing."""
    path = [str(REPO / "bench" / "ceiling"), str(REPO), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    return {**env, "POPULARITY_SERVING__RUNTIME": "onnx", "POPULARITY_BENCH_FREE_FORWARD": "1",
            "PYTHONPATH": os.pathsep.join(path)}


def scores(url: str, images: list[bytes]) -> list[float]:
    with httpx.Client(base_url=url, timeout=120) as http:
        return [http.post("/predict", files={"image": ("p.jpg", b)}).raise_for_status().json()["score"] for b in images]


def in_process(home: Path, images: list[bytes], batch: int, seconds: float, share: float) -> tuple[dict, dict]:
    """Each runtime's ceiling in this process: batches of the champion's score with the drift profile of the
    ``share`` of them the service profiles at this load (``serving.profile_in_flight`` ÷ requests in flight),
    on the photographs decoded as the service decodes them; and the champion's FLOPs an image."""
    os.environ["POPULARITY_HOME"] = str(home)
    from pipelines import registry
    from pipelines.settings import load_settings
    from serving.uploads import decode_upload

    settings = load_settings()
    decoded = [decode_upload(b, settings) for b in images]
    batch_images = [decoded[i % len(decoded)] for i in range(batch)]
    profiled = batch_images[:max(1, round(batch * share))]
    rates, flops = {}, {}
    for runtime in RUNTIMES:
        os.environ["POPULARITY_SERVING__RUNTIME"] = runtime  # read when the pyfunc loads
        model, _ = registry.load_model(settings.task, settings)
        model.predict_images(batch_images)  # warm-up
        model.profile_images(profiled)
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.predict_images(batch_images)
            model.profile_images(profiled)
            done += batch
        rates[runtime] = done / (time.perf_counter() - start)
        if runtime == "torch":
            flops = forward_flops(model.backend)
    print(f"in process (batches of {batch}, score + drift profile of {len(profiled)} of them): "
          + ", ".join(f"{rt} {v:.1f} images/s" for rt, v in rates.items()), flush=True)
    return rates, flops


def forward_flops(backend) -> dict:
    """FLOPs (2 per multiply-add) of the torch network's forward on one ``px``×``px`` image, and per scored
    image (two views with the flip average); the forward alone at batch 16 in GFLOP/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, backend.px, backend.px)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        backend.model(x)
    views = 2 if backend.flip_average else 1
    return {"px": backend.px, "views": views, "flops_per_view": counter.get_total_flops(),
            "flops_per_image": counter.get_total_flops() * views}


def forward_rates(home: Path, threads: int, batch: int, seconds: float, flops_per_view: float) -> dict:
    """GFLOP/s of the champion's network alone at ``batch`` in each runtime (rounds alternating)."""
    import torch

    from pipelines import registry
    from pipelines.settings import load_settings

    settings = load_settings()
    nets = {}
    for runtime in RUNTIMES:
        os.environ["POPULARITY_SERVING__RUNTIME"] = runtime
        model, _ = registry.load_model(settings.task, settings)
        nets[runtime] = model.backend.model
    torch.set_num_threads(threads)
    x = torch.rand(batch, 3, model.backend.px, model.backend.px)
    out: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
    for _ in range(3):
        for rt, net in nets.items():
            with torch.no_grad():
                net(x)
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < seconds:
                    net(x)
                    done += batch
            out[rt].append(done / (time.perf_counter() - start) * flops_per_view / 1e9)
    return {rt: statistics.median(v) for rt, v in out.items()}


def gemm_peak(threads: int, n: int = 1024, repeat: int = 5) -> dict:
    """float32 matmul GFLOP/s on ``threads`` threads: torch and NumPy (OpenBLAS's own threads), best of ``repeat``."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(n, n), torch.rand(n, n)
    an, bn = a.numpy(), b.numpy()
    out = {}
    for name, fn in (("torch", lambda: torch.mm(a, b)), ("numpy", lambda: an @ bn)):
        fn()
        best = min(_timed(fn) for _ in range(repeat))
        out[name] = 2 * n**3 / best / 1e9
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(rows: list[dict[str, dict]], runtime: str, key: str) -> float:
    return statistics.median(r[runtime][key] for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="the home of the CNN champion")
    parser.add_argument("--train", action="store_true", help="first train a quick cnn champion in --home")
    parser.add_argument("--demo", type=int, default=800, help="demo snapshot size with --train")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--threads", type=int, default=2, help="threads of the in-process forward and GEMM")
    parser.add_argument("--log", type=Path, default=Path("/tmp/popularity-bench-runtime"))
    args = parser.parse_args()
    args.log.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.train:
        print(f"training a quick cnn champion on demo:{args.demo} in {args.home} ...", flush=True)
        train_champion(args.home, f"demo:{args.demo}", ANY_CHAMPION, timeout_s=1800, models=("cnn",))
    images = photographs()
    env = {**os.environ, "POPULARITY_HOME": str(args.home)}
    for var in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "BENTOML_HOME"):
        env.pop(var, None)
    os.environ.clear()
    os.environ.update(env)
    from pipelines.settings import get_settings

    settings = get_settings()
    batch, niceness = settings.serving.max_batch_size, settings.stack.worker_niceness
    print(f"{args.clients} clients, {args.seconds:.0f} s a round, {args.rounds} rounds, {len(images)} photographs; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    share = min(1.0, settings.serving.profile_in_flight / args.clients)  # the service's profile rate at this load
    ceiling, flops = in_process(args.home, images, batch, args.seconds, share)
    peak = gemm_peak(args.threads)
    forward = forward_rates(args.home, args.threads, 16, 3, flops["flops_per_view"])
    print(f"champion forward: {flops['flops_per_view'] / 1e9:.3f} GFLOP a view at {flops['px']} px, "
          f"{flops['views']} view(s) an image; GEMM peak on {args.threads} threads: "
          + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()), flush=True)
    services = {rt: ServiceProcess(port=0, env={**env, "POPULARITY_SERVING__RUNTIME": rt},
                                   log_path=args.log / f"service-{rt}.log") for rt in RUNTIMES}
    services[FREE] = ServiceProcess(port=0, env=free_forward_env(env), log_path=args.log / f"service-{FREE}.log")
    try:
        for svc in services.values():
            ManagedProcess.start(svc)  # all start at once, then all are waited for
        for svc in services.values():
            svc.wait_healthy(f"{svc.url}/readyz", 300)
        same = {rt: scores(services[rt].url, images) for rt in RUNTIMES}
        for svc in services.values():
            asyncio.run(load(svc.url, images, args.clients, 3))  # warm-up
        idle = rounds(services, images, args, "idle", (*RUNTIMES, FREE))
        services.pop(FREE).stop()  # the rounds beside a training job compare the two runtimes only
        train_env = {k: v for k, v in env.items() if not k.startswith("POPULARITY_SERVING__")}
        with TrainingJob(train_env, niceness, args.log / "training.log") as job:
            waited = job.wait_training()
            print(f"the training flow began {waited:.0f} s after the command started", flush=True)
            busy = rounds(services, images, args, f"beside a training job (niceness {niceness})")
            alive = job.current is not None and job.current.poll() is None
        trainings = job.finished
    finally:
        for svc in services.values():
            svc.stop()
    again = gemm_peak(args.threads)  # the peak is the best of both ends: a loaded machine depresses either
    peak = {k: max(v, again[k]) for k, v in peak.items()}
    print("GEMM peak again after the rounds: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in again.items()))
    return report(args, idle, busy, same, ceiling, flops, peak, forward, trainings, alive, started)


def report(args, idle, busy, same, ceiling, flops, peak, forward, trainings, alive, started) -> int:
    ratio = [r["onnx"]["rps"] / max(r["torch"]["rps"], 1e-9) for r in idle]
    free_ratio = [r[FREE]["rps"] / max(r["torch"]["rps"], 1e-9) for r in idle]
    free_rps = median_of(idle, FREE, "rps")
    diff = float(np.max(np.abs(np.subtract(same["onnx"], same["torch"]))))
    idle_rps = {rt: median_of(idle, rt, "rps") for rt in RUNTIMES}
    busy_rps = {rt: median_of(busy, rt, "rps") for rt in RUNTIMES}
    kept = {rt: busy_rps[rt] / max(idle_rps[rt], 1e-9) for rt in RUNTIMES}
    longest = {rt: max(r[rt]["max_ms"] for r in busy) / 1000 for rt in RUNTIMES}
    p99 = {rt: median_of(idle, rt, "p99_ms") for rt in RUNTIMES}
    served_share = {rt: idle_rps[rt] / ceiling[rt] for rt in RUNTIMES}
    top = max(peak.values())
    served_gflops = {rt: idle_rps[rt] * flops["flops_per_image"] / 1e9 for rt in RUNTIMES}
    print(f"idle: onnx {idle_rps['onnx']:.1f}, torch {idle_rps['torch']:.1f} req/s (medians); onnx / torch per round "
          + ", ".join(f"{v:.2f}x" for v in ratio) + f": median {statistics.median(ratio):.2f}x (goal >= 2x)")
    way = (idle_rps["onnx"] - idle_rps["torch"]) / max(free_rps - idle_rps["torch"], 1e-9)
    print(f"ceiling, the same service with every network call free: {free_rps:.1f} req/s; free / torch per round "
          + ", ".join(f"{v:.2f}x" for v in free_ratio) + f": median {statistics.median(free_ratio):.2f}x (what "
          f"no CPU runtime can pass here); onnx goes {way:.0%} of the way from torch to it")
    print(f"p99 idle (median of rounds): onnx {p99['onnx']:.0f} ms, torch {p99['torch']:.0f} ms (goal: onnx no worse)")
    print(f"scores of the same {len(same['onnx'])} photographs, onnx vs torch service: max |Δ| {diff:.2e} "
          f"(goal <= 1e-4)")
    print("served / in-process: " + ", ".join(f"{rt} {v:.2f}" for rt, v in served_share.items()) + " (goal >= 0.5)")
    print(f"beside a training job: onnx {busy_rps['onnx']:.1f}, torch {busy_rps['torch']:.1f} req/s; share of idle "
          f"kept: onnx {kept['onnx']:.2f}, torch {kept['torch']:.2f} (goal >= 0.5); longest wait: onnx "
          f"{longest['onnx']:.1f} s, torch {longest['torch']:.1f} s (goal <= 10 s); trainings completed "
          f"{len(trainings)} (exit {[c for c, _ in trainings]}), one still running at the end: {alive}")
    print(f"GFLOP/s: served forward (idle req/s x {flops['flops_per_image'] / 1e9:.3f} GFLOP an image) onnx "
          f"{served_gflops['onnx']:.1f}, torch {served_gflops['torch']:.1f}; forward alone at batch 16 onnx "
          f"{forward['onnx']:.1f}, torch {forward['torch']:.1f}; GEMM peak {top:.1f}: served onnx "
          f"{served_gflops['onnx'] / top:.1%} of peak, forward alone onnx {forward['onnx'] / top:.1%}")
    print(f"bench took {time.perf_counter() - started:.0f} s; load average now "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    ok = (statistics.median(ratio) >= 2 and diff <= 1e-4 and p99["onnx"] <= p99["torch"]
          and served_share["onnx"] >= 0.5 and min(kept.values()) >= 0.5 and max(longest.values()) <= 10)
    print(json.dumps({"clients": args.clients, "rounds": args.rounds, "seconds": args.seconds, "idle": idle,
                      "beside_training": busy, "onnx_over_torch": ratio,
                      "free_forward_over_torch": free_ratio,
                      "free_forward_rps": free_rps, "max_abs_diff": diff,
                      "in_process_rps": ceiling, "served_over_in_process": served_share, "kept": kept,
                      "longest_wait_s": longest, "trainings": trainings, "flops": flops, "gemm_peak": peak,
                      "served_gflops": served_gflops, "forward_gflops": forward, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

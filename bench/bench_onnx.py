"""The CNN champion's forward on CPU: ONNX Runtime ÷ eager torch, idle and beside a busy core; INT8 measured.

In one process, on the same batch of real photographs, in R alternating rounds of T seconds each:

- eager torch (the champion's network, ``torch.set_num_threads(threads)``);
- ONNX Runtime (the graph exported and parity-checked at training, CPU execution provider, ``threads``
  intra-op threads, no spinning: the serving default), the same graph with spinning threads, and with IO
  binding (the input bound where it lies, the output written into a buffer of ours);
- INT8: the graph quantized dynamically (``onnxruntime.quantization.quantize_dynamic``).

Each at two levels: the network's forward on a ``batch`` of pixels (the goal: ONNX Runtime ÷ torch ≥ 1.5×
at batch 16 on 2 cores) and the champion's whole ``score`` (decode-side resize, flip average). Then the
same rounds with a busy-loop process beside them (one core taken): the share of its idle rate each way
keeps. Scores of the validation and test images are compared (|Δ| ≤ 1e-4 for ONNX Runtime) and the
task's metric is computed with each runtime: INT8 becomes a default only if it moves it by ≤ 0.005.

Needs a CNN champion in ``POPULARITY_HOME`` logged with its ONNX graph, or ``--train``: a quick ``cnn``
champion on a demo snapshot (in ``--home``, kept for later runs, else a temporary home). The last line is JSON.

    python bench/bench_onnx.py --train --home /tmp/onnx-home --rounds 5 --seconds 4
    python bench/bench_onnx.py --home /tmp/onnx-home      # again, on the same champion
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.champion import ANY_CHAMPION, load_champion, train_champion  # noqa: E402
from pipelines import evaluation, runtime, vision  # noqa: E402
from pipelines.data.images import to_array  # noqa: E402
from pipelines.tasks import PRIMARY  # noqa: E402


def busy() -> None:
    while True:
        pass


def rate(fn, items: int, seconds: float) -> float:
    fn()  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += items
    return done / (time.perf_counter() - start)


def rounds(ways: dict, items: int, count: int, seconds: float, label: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(count):
        for name, fn in ways.items():
            out[name].append(rate(fn, items, seconds))
        print(f"{label} round {r + 1}/{count}: " + ", ".join(f"{n} {v[-1]:.1f}/s" for n, v in out.items()), flush=True)
    return out


def quantized(graph: str, workdir: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, out = workdir / "prepared.onnx", workdir / "int8.onnx"
    quant_pre_process(graph, str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
    return str(out)


class BoundNetwork(runtime.OnnxNetwork):
    """The serving session run with IO binding: the pixels bound in place, the output into a preallocated
    array (one per batch size)."""

    def __init__(self, path: str, threads: int):
        super().__init__(path, threads)
        self.outputs: dict[int, np.ndarray] = {}

    def run(self, pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        if n not in self.outputs:
            self.outputs[n] = np.empty_like(super().run(pixels))
        out, binding = self.outputs[n], self.session.io_binding()
        binding.bind_cpu_input(runtime.INPUT, pixels)
        binding.bind_output(runtime.OUTPUT, "cpu", element_type=np.float32, shape=out.shape,
                            buffer_ptr=out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return out.copy()  # the next call writes into the same buffer


def scores_with(backend, network, images) -> np.ndarray:
    saved, backend.model = backend.model, network
    try:
        return np.asarray(backend.score(images, None), dtype=float)
    finally:
        backend.model = saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true", help="train a quick cnn champion (in --home, else a "
                                                                 "temporary home)")
    parser.add_argument("--home", type=Path, help="the home whose champion is measured (default: POPULARITY_HOME)")
    parser.add_argument("--demo", type=int, default=800, help="demo snapshot size with --train")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        default = Path(tmp) / "home" if args.train else Path(os.environ.get("POPULARITY_HOME", ".popularity"))
        home = args.home or default
        if args.train:
            print(f"training a quick cnn champion on demo:{args.demo} in {home} ...", flush=True)
            started = time.perf_counter()
            train_champion(home, f"demo:{args.demo}", ANY_CHAMPION, timeout_s=3600, models=("cnn",))
            print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
        return measure(home, Path(tmp), args)


def measure(home: Path, tmp: Path, args) -> int:
    os.environ["POPULARITY_SERVING__RUNTIME"] = "torch"
    settings, champion, model = load_champion(home)
    backend = model.backend
    if not hasattr(backend, "px"):
        raise SystemExit(f"the champion ({champion['candidate']}) is not a CNN")
    graph = model_graph(champion)
    if graph is None:
        raise SystemExit("the champion carries no ONNX graph: train it again with export at training")
    torch.set_num_threads(args.threads)
    from pipelines.data.snapshots import Snapshot
    from pipelines.training.data import TrainingData

    data = TrainingData(Snapshot.open(settings.datasets_dir, champion["snapshot"]), settings.task, settings)
    val, test = data.split_images("val"), data.split_images("test")
    images = [(val + test)[i % len(val + test)] for i in range(args.batch)]
    transform = vision.eval_transform(backend.px, backend.crop)
    pixels = np.stack([to_array(img, vision.load_px(backend.px, backend.crop)) for img in images])
    x = transform(torch.as_tensor(pixels).permute(0, 3, 1, 2)).contiguous()
    eager = backend.model
    networks = {"torch": eager, "onnx": runtime.OnnxNetwork(graph, args.threads),
                "onnx-spin": runtime.OnnxNetwork(graph, args.threads, spinning=True),
                "onnx-iobinding": BoundNetwork(graph, args.threads),
                "int8": runtime.OnnxNetwork(quantized(graph, tmp), args.threads)}

    def forward(network):
        return lambda: torch.no_grad()(network)(x)

    def score(network):
        return lambda: scores_with(backend, network, images)

    print(f"{champion['name']} v{champion['version']} ({champion['candidate']}, {backend.px} px), batch {args.batch}, "
          f"{args.threads} threads, flip average {backend.flip_average}; load average {os.getloadavg()[0]:.1f}")
    idle = rounds({n: forward(net) for n, net in networks.items()}, args.batch, args.rounds, args.seconds,
                  "forward idle")
    idle_score = rounds({n: score(networks[n]) for n in ("torch", "onnx")}, args.batch, max(2, args.rounds // 2),
                        args.seconds, "score idle")
    hog = multiprocessing.Process(target=busy, daemon=True)
    hog.start()
    try:
        loaded = rounds({n: forward(net) for n, net in networks.items()}, args.batch, args.rounds, args.seconds,
                        "forward, one core busy")
    finally:
        hog.kill()
        hog.join()

    truth = {"val": data.y("val"), "test": data.y("test")}
    split_scores = {name: {sp: scores_with(backend, net, imgs) for sp, imgs in (("val", val), ("test", test))}
                    for name, net in networks.items() if name not in ("onnx-spin", "onnx-iobinding")}
    primary = PRIMARY[settings.task]
    metric = {name: {sp: float(evaluation.task_metrics(settings.task, truth[sp], s[sp])[primary]) for sp in s}
              for name, s in split_scores.items()}
    diff = {name: max(float(np.max(np.abs(split_scores[name][sp] - split_scores["torch"][sp]))) for sp in truth)
            for name in split_scores}

    med = {name: statistics.median(v) for name, v in idle.items()}
    med_loaded = {name: statistics.median(v) for name, v in loaded.items()}
    ratio = [o / t for o, t in zip(idle["onnx"], idle["torch"], strict=True)]
    score_ratio = [o / t for o, t in zip(idle_score["onnx"], idle_score["torch"], strict=True)]
    bound = [b / o for b, o in zip(idle["onnx-iobinding"], idle["onnx"], strict=True)]
    kept = {name: med_loaded[name] / med[name] for name in med}
    int8_move = max(abs(metric["int8"][sp] - metric["onnx"][sp]) for sp in truth)
    print(f"forward, idle: torch {med['torch']:.1f}, onnx {med['onnx']:.1f}, onnx-spin {med['onnx-spin']:.1f}, "
          f"onnx-iobinding {med['onnx-iobinding']:.1f}, int8 {med['int8']:.1f} images/s (medians)")
    print(f"IO binding / plain run, idle, per round: {', '.join(f'{v:.3f}' for v in bound)} "
          f"(median {statistics.median(bound):.3f}x)")
    print(f"onnx / torch forward, idle: min {min(ratio):.2f}x, median {statistics.median(ratio):.2f}x (goal >= 1.5x); "
          f"whole score: median {statistics.median(score_ratio):.2f}x")
    print(f"one core busy: torch {med_loaded['torch']:.1f}, onnx {med_loaded['onnx']:.1f}, onnx-spin "
          f"{med_loaded['onnx-spin']:.1f}, onnx-iobinding {med_loaded['onnx-iobinding']:.1f}, int8 "
          f"{med_loaded['int8']:.1f} images/s; share of idle kept: "
          + ", ".join(f"{n} {v:.2f}" for n, v in kept.items()))
    print(f"max |Δ score| vs torch on validation+test: onnx {diff['onnx']:.2e} (goal <= 1e-4), int8 {diff['int8']:.2e}")
    print(f"{primary}: " + "; ".join(f"{n} val {m['val']:.4f} test {m['test']:.4f}" for n, m in metric.items())
          + f"; INT8 moves it by {int8_move:.4f} ({'within' if int8_move <= 0.005 else 'over'} 0.005: "
          f"{'may be' if int8_move <= 0.005 else 'stays'} off by default)")
    ok = statistics.median(ratio) >= 1.5 and diff["onnx"] <= 1e-4
    print(json.dumps({"batch": args.batch, "threads": args.threads, "rounds": args.rounds, "idle": idle,
                      "loaded": loaded, "score_idle": idle_score, "onnx_over_torch": ratio,
                      "score_onnx_over_torch": score_ratio, "iobinding_over_plain": bound,
                      "kept_under_load": kept, "max_abs_diff": diff,
                      "metric": metric, "int8_metric_move": int8_move, "ok": ok}))
    return 0 if ok else 1


def model_graph(champion: dict) -> str | None:
    """The local path of the champion's logged ONNX graph (None for a model logged without one)."""
    import mlflow

    uri = f"models:/{champion['name']}/{champion['version']}"
    artifacts = mlflow.models.get_model_info(uri).flavors["python_function"].get("artifacts", {})
    if "onnx" not in artifacts:
        return None
    return str(Path(mlflow.artifacts.download_artifacts(uri)) / artifacts["onnx"]["path"])


if __name__ == "__main__":
    sys.exit(main())

"""The networks' CPU runtime: ONNX graphs exported at training, run by ONNX Runtime.

A CNN candidate and the drift profile's embedding trunk are exported to ONNX when they are logged
(:func:`export`, the TorchScript-based exporter at opset 17 with a dynamic batch axis) and checked
against the torch network on the validation images. On CPU the graph runs in ONNX Runtime's CPU
execution provider (:class:`OnnxNetwork`: one ``InferenceSession`` per graph and process, the settings'
threads); on CUDA, or when asked (``POPULARITY_SERVING__RUNTIME=torch``), when a model carries no graph
(logged before export existed) or when its graph failed the parity check, torch runs it and
:func:`choose` says why. torch is imported only to export a graph or to feed one torch tensors: a graph
fed numpy arrays (:meth:`OnnxNetwork.run`) runs without it.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

OPSET = 17  # the TorchScript exporter's well-trodden opset; ONNX Runtime 1.32 runs up to 23
INPUT, OUTPUT = "pixels", "output"
PARITY_TOLERANCE = 1e-4  # the largest absolute score difference an exported graph may show


def export(network: nn.Module, px: int, path: Path) -> Path:
    """Write ``network`` (eval mode, CPU) as an ONNX graph taking ``N×3×px×px`` float32 pixels."""
    import torch

    cpu = copy.deepcopy(network).cpu().eval()
    example = torch.zeros(2, 3, px, px)
    with warnings.catch_warnings(), torch.no_grad():
        # the dynamo exporter (torch's default since 2.9) needs onnxscript and trips on models it need not;
        # the TorchScript one exports these plain convolutional networks exactly
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(cpu, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return path


_SESSIONS: dict[tuple[str, int, bool], object] = {}
_LOCK = threading.Lock()


def session(path: str | Path, threads: int = 0, spinning: bool = False):
    """The process's one ``InferenceSession`` of a graph file (ONNX Runtime's sessions are thread-safe).

    ``threads`` 0 lets ONNX Runtime take one intra-op thread per physical core. Without ``spinning`` its
    idle threads sleep instead of busy-waiting, which keeps a shared core for whoever else needs it.
    """
    import onnxruntime as ort

    key = (str(Path(path).resolve()), threads, spinning)
    with _LOCK:
        if key not in _SESSIONS:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            _SESSIONS[key] = ort.InferenceSession(str(key[0]), options, providers=["CPUExecutionProvider"])
        return _SESSIONS[key]


class OnnxNetwork:
    """An exported network called like the torch module it came from, on CPU tensors."""

    def __init__(self, path: str | Path, threads: int = 0, spinning: bool = False):
        self.path = str(path)
        self.session = session(path, threads, spinning)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        pixels = x.detach().to("cpu", torch.float32).contiguous().numpy()  # a view, not a copy
        return torch.from_numpy(self.run(pixels))

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """The graph's output for a float32 ``N×3×px×px`` array."""
        return self.session.run([OUTPUT], {INPUT: pixels})[0]

    def eval(self) -> OnnxNetwork:  # the torch module's interface, where callers set it
        return self


@dataclass
class Choice:
    runtime: str  # "onnx" or "torch"
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"runtime": self.runtime, "reason": self.reason}


def choose(requested: str, graph: str | None, parity: dict | None) -> Choice:
    """Which runtime runs a network: ONNX Runtime on CPU when asked, when there is a graph and it passed parity."""
    if cuda_available():
        return Choice("torch", "CUDA: torch with mixed precision")
    if requested == "torch":
        return Choice("torch", "the runtime setting asks for torch")
    if graph is None:
        why = (parity or {}).get("reason") or "the model carries no ONNX graph (logged before export at training)"
        return Choice("torch", why)
    if parity is not None and not parity.get("passed", False):
        return Choice("torch", f"the ONNX graph failed its parity check: {parity.get('reason', 'no reason given')}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return Choice("torch", f"onnxruntime is not installed ({exc})")
    return Choice("onnx", "ONNX Runtime, CPU execution provider")


def onnx_network(requested: str, graph: str | None, parity: dict | None,
                 threads: int = 0) -> tuple[OnnxNetwork | None, Choice]:
    """The graph in ONNX Runtime where :func:`choose` allows it (``None``: the torch network runs), and why."""
    choice = choose(requested, graph, parity)
    return (OnnxNetwork(graph, threads) if choice.runtime == "onnx" else None), choice


def cuda_available() -> bool:
    """``torch.cuda.is_available()``, without importing torch on a machine with no NVIDIA driver loaded (a
    process that runs only ONNX graphs then never pays torch's import)."""
    driver = any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/dxg"))  # Linux, WSL2
    if not driver and "torch" not in sys.modules:
        return False
    import torch

    return torch.cuda.is_available()


def parity(reference: np.ndarray, exported: np.ndarray, tolerance: float = PARITY_TOLERANCE, **metrics) -> dict:
    """The parity record of an exported graph: the largest absolute difference of its outputs from the torch
    network's on the same images, whether that is within ``tolerance``, and any metrics computed both ways."""
    reference, exported = np.asarray(reference, dtype=float), np.asarray(exported, dtype=float)
    if reference.shape != exported.shape:
        return {"passed": False, "max_abs_diff": float("inf"), "tolerance": tolerance, "images": len(reference),
                "reason": f"output shape {exported.shape} differs from torch's {reference.shape}", **metrics}
    diff = float(np.max(np.abs(reference - exported))) if reference.size else 0.0
    passed = bool(np.isfinite(diff) and diff <= tolerance)
    record = {"passed": passed, "max_abs_diff": diff, "tolerance": tolerance, "images": len(reference), **metrics}
    if not passed:
        record["reason"] = f"max |Δ| {diff:.3g} over {len(reference)} images exceeds {tolerance:g}"
    return record

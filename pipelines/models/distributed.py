"""Data-parallel training with ``torch.distributed``: set up by ``torchrun``, a no-op otherwise.

``torchrun --nproc_per_node N`` sets ``WORLD_SIZE``/``RANK``/``MASTER_ADDR``; each process then
joins one group (NCCL on GPUs, gloo on CPU), trains on its shard of every global batch, and only
rank 0 talks to MLflow. A process that was not launched so never imports torch here: the commands that
only read the registry or the request logs start without it.
"""

from __future__ import annotations

import os


def launched() -> bool:
    """True when started by ``torchrun`` (or any launcher setting the env:// variables) with N > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group once; each rank takes its own GPU when there are several."""
    if not launched() or _dist().is_initialized():
        return
    import torch

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    _dist().init_process_group(backend=backend)


def teardown() -> None:
    if launched() and _dist().is_initialized():
        _dist().destroy_process_group()


def active() -> bool:
    return launched() and _dist().is_available() and _dist().is_initialized() and _dist().get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world_size() -> int:
    return _dist().get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def _dist():
    """``torch.distributed``, imported on first use by a launched process."""
    import torch.distributed as dist

    return dist


def _tensor(values: list[float]):
    import torch

    return torch.tensor(values, dtype=torch.float64, device="cuda" if _dist().get_backend() == "nccl" else "cpu")


def all_sum(values: list[float]) -> list[float]:
    """Each value summed over the ranks (the values themselves in one process)."""
    if not active():
        return values
    tensor = _tensor(values)
    _dist().all_reduce(tensor)
    return tensor.tolist()


def broadcast_float(value: float) -> float:
    """Rank 0's value on every rank, so that early stopping decides the same everywhere."""
    if not active():
        return value
    tensor = _tensor([value])
    _dist().broadcast(tensor, src=0)
    return float(tensor.item())

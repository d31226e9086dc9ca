"""CNN embeddings: the penultimate layer of an ImageNet backbone, as seeds 001 and 003 use fc6/fc7.

MobileNetV2's pooled 1280-d features stand in for AlexNet's fc7. With ``flip`` each image is also
embedded mirrored and the two are averaged (seed 003's flipped-image augmentation), which makes the
features, and every model on them, insensitive to a horizontal flip.

The trunk runs in torch, or as its ONNX graph in ONNX Runtime fed numpy arrays: the drift profile's trunk
is exported once per machine (:func:`trunk_graph`), so that training and serving a classical model, whose
only network is that profile's, never import torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pipelines import runtime, vision
from pipelines.data.images import to_array

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)
PROBE_IMAGES = 32  # the images a trunk's exported graph is checked on against torch
TRUNK_TOLERANCE = 1e-3  # pooled ReLU6 features of magnitude ~0–6


@lru_cache(maxsize=2)
def backbone(name: str) -> nn.Module:
    """The pretrained trunk with its head removed (image batch → pooled feature vector), loaded once per
    process (offline weights first, see ``pipelines.vision``)."""
    from torch import nn

    model = vision.pretrained_backbone(name)
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no .features trunk to embed with")
    trunk = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return trunk.to(vision.device()).eval()


def embed(images: list[Image.Image], name: str = "mobilenet_v2", px: int = 128, flip: bool = True,
          batch_size: int = 64, network: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """``N×D`` float32 embeddings; the mean of the image's and its mirror's when ``flip``. ``network``: the
    trunk's exported graph (:class:`pipelines.runtime.OnnxNetwork`) to run instead of the torch trunk, fed
    numpy arrays (no torch import)."""
    out = []
    for start in range(0, len(images), batch_size):
        pixels = np.stack([to_array(img, px) for img in images[start : start + batch_size]])
        if isinstance(network, runtime.OnnxNetwork):
            x = vision.imagenet_pixels(pixels)
            z = network.run(x)
            if flip:
                z = (z + network.run(np.ascontiguousarray(x[..., ::-1]))) / 2
        else:
            z = _embed_torch(pixels, network or backbone(name), px, flip)
        out.append(np.asarray(z, dtype=np.float32))
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)


def _embed_torch(pixels: np.ndarray, model: Callable, px: int, flip: bool) -> np.ndarray:
    import torch
    from torch import nn

    dev = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
    with torch.no_grad():
        x = vision.eval_transform(px)(torch.as_tensor(pixels).permute(0, 3, 1, 2)).to(dev)
        z = model(x)
        if flip:
            z = (z + model(torch.flip(x, dims=[3]))) / 2
        return z.float().cpu().numpy()


_TRUNKS: dict[tuple[str, int, str], tuple[str | None, dict]] = {}
_SCRATCH: list[tempfile.TemporaryDirectory] = []  # where graphs go when the cache is not writable


def trunk_graph(name: str, px: int, cache_dir: Path, probe: list[Image.Image]) -> tuple[str | None, dict]:
    """The pretrained trunk ``name`` at ``px`` as an ONNX graph and its parity record: exported once per
    machine into ``cache_dir`` (keyed by the versions of torch, the weights and the opset), checked against
    torch on the first :data:`PROBE_IMAGES` of ``probe`` when it is exported, and read back with that
    record afterwards, so a process that embeds with it (training a classical model, serving one) never
    imports torch. A graph that fails its check is not kept: ``(None, record)``, and torch embeds.
    Raises :class:`pipelines.vision.WeightsUnavailable` when there are no weights to export."""
    key = f"{name}-{px}-opset{runtime.OPSET}-torch{importlib.metadata.version('torch')}-{vision.weights_id(name)}"
    memo = (name, px, str(cache_dir))
    if memo in _TRUNKS:
        return _TRUNKS[memo]
    graph, record_file = Path(cache_dir) / f"{key}.onnx", Path(cache_dir) / f"{key}.json"
    if graph.exists() and record_file.exists():
        _TRUNKS[memo] = str(graph), json.loads(record_file.read_text())
        return _TRUNKS[memo]
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".export-", dir=cache_dir))
    except OSError as exc:
        log.info("the graph cache %s is not writable (%s): exporting for this process only", cache_dir, exc)
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="popularity-onnx-"))
        folder = None
    try:
        exported = runtime.export(backbone(name), px, Path(folder or _SCRATCH[-1].name) / graph.name)
        probe = probe[:PROBE_IMAGES]
        record = runtime.parity(embed(probe, name, px, flip=False),
                                embed(probe, name, px, flip=False, network=runtime.OnnxNetwork(exported)),
                                TRUNK_TOLERANCE)
        if record["passed"] and folder is not None:  # published whole: concurrent exporters each replace a file
            (folder / record_file.name).write_text(json.dumps(record))
            os.replace(exported, graph)
            os.replace(folder / record_file.name, record_file)
            exported = graph
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    _TRUNKS[memo] = (str(exported) if record["passed"] else None), record
    return _TRUNKS[memo]

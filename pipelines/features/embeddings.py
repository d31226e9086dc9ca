"""CNN embeddings: the penultimate layer of an ImageNet backbone, as seeds 001 and 003 use fc6/fc7.

MobileNetV2's pooled 1280-d features stand in for AlexNet's fc7. With ``flip`` each image is also
embedded mirrored and the two are averaged (seed 003's flipped-image augmentation), which makes the
features, and every model on them, insensitive to a horizontal flip.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import nn

from pipelines import vision
from pipelines.data.images import to_array


class Penultimate(nn.Module):
    """A torchvision classifier with its head removed: image batch → pooled feature vector."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "features"):
            raise ValueError(f"{type(model).__name__} has no .features trunk to embed with")
        self.features = model.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


@lru_cache(maxsize=2)
def backbone(name: str) -> nn.Module:
    """The pretrained trunk, loaded once per process (offline weights first, see ``pipelines.vision``)."""
    return Penultimate(vision.pretrained_backbone(name)).to(vision.device()).eval()


@torch.no_grad()
def embed(images: list[Image.Image], name: str = "mobilenet_v2", px: int = 128, flip: bool = True,
          batch_size: int = 64, network: Callable[[torch.Tensor], torch.Tensor] | None = None) -> np.ndarray:
    """``N×D`` float32 embeddings; the mean of the image's and its mirror's when ``flip``. ``network``: the
    trunk's exported graph (:class:`pipelines.runtime.OnnxNetwork`) to run instead of the torch trunk."""
    model = network or backbone(name)
    dev = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")
    transform = vision.eval_transform(px)
    out = []
    for start in range(0, len(images), batch_size):
        pixels = np.stack([to_array(img, px) for img in images[start : start + batch_size]])
        x = transform(torch.as_tensor(pixels).permute(0, 3, 1, 2)).to(dev)
        z = model(x)
        if flip:
            z = (z + model(torch.flip(x, dims=[3]))) / 2
        out.append(z.float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), dtype=np.float32)

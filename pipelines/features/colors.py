"""Dominant colours (seed 000): k-means palettes, batched and vectorised in torch.

Seed 000 fits scikit-learn's MiniBatchKMeans on every full-resolution pixel of one image at a
time. Here many downsampled images are clustered at once as one tensor program (on the GPU when
there is one); palettes agree with the per-image approach while running orders of magnitude faster.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from pipelines import vision


def _sq_distances(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances of every pixel to every centre as one batched matmul (no N×P×k×3 tensor)."""
    return (x2 - 2 * torch.bmm(x, c.transpose(1, 2)) + (c * c).sum(-1)[:, None, :]).clamp_(min=0)


@torch.no_grad()
def dominant_colors(pixels: np.ndarray, k: int = 5, iters: int = 12) -> np.ndarray:
    """``N×k×4`` palettes (R, G, B in 0–255 and the weight of each colour), heaviest first.

    ``pixels`` is an ``N×H×W×3`` uint8 batch; luminance-quantile seeding, then Lloyd iterations, all
    batched and deterministic.
    """
    device = vision.device()
    x = torch.as_tensor(pixels, device=device).reshape(len(pixels), -1, 3).float()
    n, p, _ = x.shape
    x2 = (x * x).sum(-1, keepdim=True)
    # Seeding from the pixels sorted by luminance (the means of k equal slices) depends on the set of
    # pixels, not their order: a mirrored or re-encoded image gets the same palette, unlike a random
    # k-means++ draw.
    luminance = x @ torch.tensor([0.299, 0.587, 0.114], device=device)
    ordered = torch.gather(x, 1, luminance.argsort(1)[..., None].expand(-1, -1, 3))
    c = torch.stack([chunk.mean(1) for chunk in ordered.tensor_split(k, dim=1)], 1)
    ones = torch.ones(n, p, device=device)
    for _ in range(iters):
        assign = _sq_distances(x, x2, c).argmin(-1)
        sums = torch.zeros(n, k, 3, device=device).scatter_add_(1, assign[..., None].expand(-1, -1, 3), x)
        counts = torch.zeros(n, k, device=device).scatter_add_(1, assign, ones)
        c = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], c)
    assign = _sq_distances(x, x2, c).argmin(-1)
    weights = torch.zeros(n, k, device=device).scatter_add_(1, assign, ones) / p
    order = weights.argsort(1, descending=True)
    c = torch.gather(c, 1, order[..., None].expand(-1, -1, 3))
    weights = torch.gather(weights, 1, order)
    return torch.cat([c, weights[..., None]], -1).cpu().numpy()


def palette_features(palettes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Seed 000's feature vector: the palette's unweighted mean colour minus the image's mean colour
    (the share-weighted one: how far the palette leans from what dominates), the sorted palette, and
    the pairwise differences of its colours."""
    k = palettes.shape[1]
    channels = ["r", "g", "b", "w"]
    colours, shares = palettes[..., :3], palettes[..., 3:]
    lean = colours.mean(1) - (colours * shares).sum(1) / np.clip(shares.sum(1), 1e-9, None)
    names = [f"unweighted_minus_mean_{ch}" for ch in "rgb"] + [f"color{i}_{ch}" for i in range(k) for ch in channels]
    parts = [lean, palettes.reshape(len(palettes), -1)]
    for i, j in combinations(range(k), 2):
        parts.append(palettes[:, i] - palettes[:, j])
        names += [f"color{i}-{j}_{ch}" for ch in channels]
    return np.concatenate(parts, 1), names

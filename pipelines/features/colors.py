"""Dominant colours (seed 000): k-means palettes, batched and vectorised.

Seed 000 fits scikit-learn's MiniBatchKMeans on every full-resolution pixel of one image at a
time. Here many downsampled images are clustered at once as one array program; palettes agree with
the per-image approach while running orders of magnitude faster. It is NumPy on one thread: on
64×64 thumbnails each step is too small for a thread pool to pay, and torch's intra-op threads
collapsed it on a shared 2-core machine (5× slower than this, same palettes; ``bench/bench_colors.py``).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np


def _nearest(planes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each pixel's nearest centre, ``N×P``. ``planes`` is ``3×N×P`` (one contiguous plane per channel).

    |x − c|² = |x|² − 2x·c + |c|²; |x|² is the same for every centre, so the nearest minimises |c|² − 2x·c,
    computed centre by centre in place (no N×P×k×3 tensor)."""
    k = centres.shape[1]
    sq = (centres * centres).sum(-1)
    scores = np.empty((k, *planes.shape[1:]), np.float32)
    for j in range(k):
        s = scores[j]
        np.multiply(planes[0], centres[:, j, 0:1], out=s)
        s += planes[1] * centres[:, j, 1:2]
        s += planes[2] * centres[:, j, 2:3]
        s *= -2
        s += sq[:, j : j + 1]
    return scores.argmin(0)


def dominant_colors(pixels: np.ndarray, k: int = 5, iters: int = 12) -> np.ndarray:
    """``N×k×4`` palettes (R, G, B in 0–255 and the weight of each colour), heaviest first.

    ``pixels`` is an ``N×H×W×3`` uint8 batch; luminance-quantile seeding, then Lloyd iterations, all
    batched and deterministic.
    """
    n = len(pixels)
    x = np.asarray(pixels).reshape(n, -1, 3).astype(np.float32)
    p = x.shape[1]
    # Seeding from the pixels sorted by luminance (the means of k equal slices) depends on the set of
    # pixels, not their order: a mirrored or re-encoded image gets the same palette, unlike a random
    # k-means++ draw.
    luminance = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ordered = np.take_along_axis(x, np.argsort(luminance, axis=1, kind="stable")[..., None], 1)
    centres = np.stack([chunk.mean(1) for chunk in np.array_split(ordered, k, axis=1)], 1).astype(np.float32)
    planes = np.ascontiguousarray(x.transpose(2, 0, 1))
    flat = planes.reshape(3, -1)
    cell = (np.arange(n) * k)[:, None]  # image i's centres are bins i·k … i·k + k − 1
    for _ in range(iters):
        index = (_nearest(planes, centres) + cell).ravel()
        counts = np.bincount(index, minlength=n * k).reshape(n, k)
        sums = np.stack([np.bincount(index, weights=flat[ch], minlength=n * k) for ch in range(3)], -1)
        means = sums.reshape(n, k, 3) / np.maximum(counts, 1)[..., None]
        centres = np.where(counts[..., None] > 0, means, centres).astype(np.float32)
    index = (_nearest(planes, centres) + cell).ravel()
    weights = np.bincount(index, minlength=n * k).reshape(n, k) / p
    order = np.argsort(-weights, axis=1, kind="stable")
    centres = np.take_along_axis(centres, order[..., None], 1)
    weights = np.take_along_axis(weights, order, 1)
    return np.concatenate([centres, weights[..., None]], -1).astype(np.float32)


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

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


def dominant_colors(pixels: np.ndarray, k: int = 5, iters: int = 12, stride: int = 1) -> np.ndarray:
    """``N×k×4`` palettes (R, G, B in 0–255 and the weight of each colour), heaviest first.

    ``pixels`` is an ``N×H×W×3`` uint8 batch; luminance-quantile seeding, then at most ``iters`` Lloyd
    iterations, all batched and deterministic. An image whose assignment no longer changes has reached
    Lloyd's fixed point and leaves the batch (its later steps would change nothing). With ``stride`` above 1
    the seeding and the Lloyd steps see every ``stride``-th pixel of every ``stride``-th row (a quarter of
    them at 2), then one last step and the weights every pixel: a palette within a few RGB of the all-pixel
    one (``tests/unit/test_colour_path.py`` holds the bound) at about a third of the cost.
    """
    if stride < 1:
        raise ValueError(f"stride must be at least 1, not {stride}")
    pixels = np.asarray(pixels)
    n = len(pixels)
    x = pixels.reshape(n, -1, 3).astype(np.float32)
    sample = x if stride == 1 else pixels[:, ::stride, ::stride].reshape(n, -1, 3).astype(np.float32)
    # Seeding from the pixels sorted by luminance (the means of k equal slices) depends on the set of
    # pixels, not their order: a mirrored or re-encoded image gets the same palette, unlike a random
    # k-means++ draw.
    luminance = sample @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ordered = np.take_along_axis(sample, np.argsort(luminance, axis=1, kind="stable")[..., None], 1)
    centres = np.stack([chunk.mean(1) for chunk in np.array_split(ordered, k, axis=1)], 1).astype(np.float32)
    _lloyd(np.ascontiguousarray(sample.transpose(2, 0, 1)), centres, iters)
    planes = np.ascontiguousarray(x.transpose(2, 0, 1))
    if stride > 1 and iters > 0:
        _lloyd(planes, centres, 1)  # one step on every pixel: the sample's centres moved to all pixels' means
    index = (_nearest(planes, centres) + (np.arange(n) * k)[:, None]).ravel()
    weights = np.bincount(index, minlength=n * k).reshape(n, k) / x.shape[1]
    order = np.argsort(-weights, axis=1, kind="stable")
    centres = np.take_along_axis(centres, order[..., None], 1)
    weights = np.take_along_axis(weights, order, 1)
    return np.concatenate([centres, weights[..., None]], -1).astype(np.float32)


def _lloyd(planes: np.ndarray, centres: np.ndarray, iters: int) -> None:
    """At most ``iters`` Lloyd steps on ``centres`` (``N×k×3``, updated in place) for ``3×N×P`` ``planes``;
    an image stops at its fixed point, where its assignment repeats (each further step would recompute the
    same centres)."""
    k = centres.shape[1]
    active = np.arange(centres.shape[0])
    previous = None
    for _ in range(iters):
        labels = _nearest(planes, centres[active])
        if previous is not None:
            moving = (labels != previous).any(1)
            if not moving.all():
                active, planes, labels = active[moving], planes[:, moving], labels[moving]
                if not len(active):
                    return
        n = len(active)
        index = (labels + (np.arange(n) * k)[:, None]).ravel()
        flat = planes.reshape(3, -1)
        counts = np.bincount(index, minlength=n * k).reshape(n, k)
        sums = np.stack([np.bincount(index, weights=flat[ch], minlength=n * k) for ch in range(3)], -1)
        means = sums.reshape(n, k, 3) / np.maximum(counts, 1)[..., None]
        centres[active] = np.where(counts[..., None] > 0, means, centres[active])
        previous = labels


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

"""The colour path's palettes compared, as ``bench/bench_colors.py`` reports them and ``tests/unit/test_colour_path.py``
holds them: photographs as 1080×1080 JPEGs (Instagram's size), the palettes of the path before issue 29, and
the distance between two palettes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps
from scipy.optimize import linear_sum_assignment

from pipelines.data.images import to_array
from pipelines.features.colors import dominant_colors
from pipelines.settings import FeatureSettings, ImageLimits

SIDE = 1080


def as_jpegs(arrays: list[np.ndarray]) -> list[bytes]:
    """RGB photographs fitted to ``SIDE``×``SIDE`` JPEGs (quality 90)."""
    out = []
    for array in arrays:
        buf = io.BytesIO()
        ImageOps.fit(Image.fromarray(array), (SIDE, SIDE), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def previous_palettes(jpegs: list[bytes], features: FeatureSettings, limits: ImageLimits) -> np.ndarray:
    """The palettes of the path before issue 29: the DCT-scaled decode shrunk bicubically to ``model_side``,
    every Lloyd step on every pixel of the thumbnail."""
    small = []
    for blob in jpegs:
        img = Image.open(io.BytesIO(blob))
        img.draft("RGB", (limits.model_side, limits.model_side))
        img = img.convert("RGB")
        img.thumbnail((limits.model_side, limits.model_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
        small.append(to_array(img, features.colors_px))
    return dominant_colors(np.stack(small), features.colors_k, features.colors_iters, stride=1)


def matched_distance(a: np.ndarray, b: np.ndarray, weighted: bool = True) -> float:
    """RGB distance between two palettes (rows of r, g, b, image share) after pairing their colours optimally,
    averaged with the paired colours' mean image share as weight (or plainly)."""
    cost = np.linalg.norm(a[:, None, :3] - b[None, :, :3], axis=-1)
    rows, cols = linear_sum_assignment(cost)
    weights = (a[rows, 3] + b[cols, 3]) / 2 if weighted else np.ones(len(rows))
    return float((cost[rows, cols] * weights).sum() / weights.sum())

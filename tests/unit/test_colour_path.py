"""The colour features' fast path (issue 29) against the path it replaced, on real photographs.

The previous path decoded to ``images.model_side`` with a bicubic shrink and ran every Lloyd step on every
pixel of the 64×64 thumbnail; now the shrink is bilinear and the steps see every ``features.colors_stride``-th
pixel (the weights still count them all). Palettes must stay within a few RGB of the old ones: the
tolerance documented in ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.palettes import as_jpegs, matched_distance, previous_palettes
from pipelines.data.images import decode, to_array
from pipelines.features.colors import _nearest, dominant_colors
from pipelines.features.featurizer import ImageFeaturizer
from pipelines.settings import FeatureSettings, ImageLimits

TOLERANCE_MEAN, TOLERANCE_WORST = 3.0, 6.0  # RGB, paired colours weighted by their image shares


@pytest.fixture(scope="module")
def jpegs(photographs) -> list[bytes]:
    """The photographs as 1080×1080 JPEGs (Instagram's size), as bench/bench_colors.py makes them."""
    grace = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    return as_jpegs([*photographs.values(), grace])


def test_fast_colour_palettes_stay_within_the_documented_tolerance_of_the_previous_path(jpegs):
    settings, limits = FeatureSettings(), ImageLimits()
    assert settings.colors_stride == 2
    images = [decode(b, limits.max_bytes, limits.max_pixels, max_side=limits.model_side)[0] for b in jpegs]
    assert all(max(img.size) == limits.model_side for img in images)
    small = np.stack([to_array(img, settings.colors_px) for img in images])
    fast = dominant_colors(small, settings.colors_k, settings.colors_iters, settings.colors_stride)
    before = previous_palettes(jpegs, settings, limits)
    distances = [matched_distance(a, b) for a, b in zip(fast, before, strict=True)]
    assert np.mean(distances) <= TOLERANCE_MEAN and max(distances) <= TOLERANCE_WORST, distances
    # the bound is a real one: Lloyd steps on one pixel in 64 (stride 8) leave it
    coarse = dominant_colors(small, settings.colors_k, settings.colors_iters, stride=8)
    assert np.mean([matched_distance(a, b) for a, b in zip(coarse, before, strict=True)]) > TOLERANCE_MEAN
    # the featurizer built from the settings is the fast path, and its table is built from these palettes
    table = ImageFeaturizer.from_settings(settings, ("colors",)).transform(images)
    assert np.allclose(table[[f"color0_{c}" for c in "rgbw"]].to_numpy(), fast[:, 0], atol=1e-4)


def test_models_logged_before_the_stride_keep_the_all_pixel_palettes(jpegs):
    """A featurizer config without ``colors_stride`` (every model logged before it) runs Lloyd on every pixel."""
    config = {"groups": ["colors"], "colors_k": 5, "colors_px": 64, "colors_iters": 25}
    featurizer = ImageFeaturizer(**{k: tuple(v) if k == "groups" else v for k, v in config.items()})
    assert featurizer.colors_stride == 1


def test_stopping_at_lloyds_fixed_point_changes_no_palette(photographs):
    """Images leave the batch once their assignment repeats; the palettes are those of every step run."""
    small = np.stack([np.asarray(ImageOps.fit(Image.fromarray(a), (32, 32))) for a in photographs.values()])
    for k, iters in ((3, 12), (5, 25), (5, 80)):
        assert np.array_equal(dominant_colors(small, k, iters), every_step(small, k, iters))


def every_step(pixels: np.ndarray, k: int, iters: int) -> np.ndarray:
    """The k-means before issue 29, verbatim: luminance-quantile seeds, then ``iters`` Lloyd steps for every image."""
    n = len(pixels)
    x = pixels.reshape(n, -1, 3).astype(np.float32)
    p = x.shape[1]
    luminance = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ordered = np.take_along_axis(x, np.argsort(luminance, axis=1, kind="stable")[..., None], 1)
    centres = np.stack([chunk.mean(1) for chunk in np.array_split(ordered, k, axis=1)], 1).astype(np.float32)
    planes = np.ascontiguousarray(x.transpose(2, 0, 1))
    flat = planes.reshape(3, -1)
    cell = (np.arange(n) * k)[:, None]
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

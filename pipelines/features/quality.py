"""Colour and quality statistics of an image batch: the attributes people notice first."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import laplace

NAMES = ["colourfulness", "contrast", "brightness", "saturation", "sharpness"]


def quality_stats(pixels: np.ndarray) -> pd.DataFrame:
    """One row per image of an ``N×H×W×3`` uint8 batch."""
    x = pixels.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    axes = (1, 2)
    colourfulness = np.sqrt(rg.std(axes) ** 2 + yb.std(axes) ** 2) + 0.3 * np.sqrt(
        rg.mean(axes) ** 2 + yb.mean(axes) ** 2
    )  # Hasler & Süsstrunk (2003)
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    high, low = x.max(-1), x.min(-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0)
    sharpness = np.stack([laplace(lum).var() for lum in luminance])
    return pd.DataFrame({
        "colourfulness": colourfulness,
        "contrast": luminance.std(axes),
        "brightness": luminance.mean(axes),
        "saturation": saturation.mean(axes),
        "sharpness": sharpness,
    })

"""The names of the drift monitor's features, apart from the code that computes them (``profile``), so
that the monitor reads them without importing torch or OpenCV."""

from __future__ import annotations

from pipelines.features.quality import NAMES as QUALITY

DOMINANT = ["dominant_r", "dominant_g", "dominant_b", "dominant_share"]
SCALARS = [*QUALITY, *DOMINANT, "face_count"]
PROJECTION_PREFIX = "pc"  # the embedding's principal components: pc1, pc2, …

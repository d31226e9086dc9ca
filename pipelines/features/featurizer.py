"""The featurizer: the same object turns images into a named feature table in training and inside the model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from PIL import Image

from pipelines.data.images import to_array
from pipelines.features import faces
from pipelines.features.colors import dominant_colors, palette_features
from pipelines.features.quality import quality_stats
from pipelines.features.social import social_features
from pipelines.settings import FeatureSettings

GROUPS = ("colors", "quality", "faces", "embeddings", "social")
# Bumped whenever the code changes what a configuration computes, so no cached table of the old code
# is read: 2 added seed 000's unweighted-minus-mean colour and decoding to ``images.model_side``; 3 the
# bilinear fit to it and Lloyd's fixed point (issue 29).
REVISION = 3


@dataclass(frozen=True)
class ImageFeaturizer:
    """Turns decoded images (and their social columns) into a named feature table.

    ``groups`` picks any of ``colors``, ``quality``, ``faces``, ``embeddings`` and ``social``.
    """

    groups: tuple[str, ...] = ("colors", "quality")
    colors_k: int = 5
    colors_px: int = 64
    colors_iters: int = 12
    colors_stride: int = 1  # Lloyd steps on every n-th pixel (1 for models logged before the setting)
    quality_px: int = 128
    faces_px: int = 512
    embed_backbone: str = "mobilenet_v2"
    embed_px: int = 128
    embed_flip: bool = True

    @classmethod
    def from_settings(cls, settings: FeatureSettings, groups: tuple[str, ...]) -> ImageFeaturizer:
        """The featurizer of ``groups`` as configured; training and the Dask feature flow both build it
        here, so their cache keys agree. Groups keep one canonical order, whatever order they are asked in."""
        return cls(groups=tuple(g for g in GROUPS if g in groups), colors_k=settings.colors_k,
                   colors_px=settings.colors_px, colors_iters=settings.colors_iters,
                   colors_stride=settings.colors_stride, faces_px=settings.faces_px,
                   embed_backbone=settings.embed_backbone, embed_px=settings.embed_px, embed_flip=settings.embed_flip)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps({**asdict(self), "revision": REVISION}, sort_keys=True).encode()).hexdigest()[:12]

    def transform(self, images: list[Image.Image], social: pd.DataFrame | None = None,
                  network=None) -> pd.DataFrame:
        """The feature table of ``images``; ``network``: the embedding trunk's exported graph
        (:class:`pipelines.runtime.OnnxNetwork`, see ``embeddings.trunk_graph``) in place of torch's."""
        parts = []
        if "colors" in self.groups:
            small = np.stack([to_array(img, self.colors_px) for img in images])
            values, names = palette_features(dominant_colors(small, self.colors_k, self.colors_iters, self.colors_stride))
            parts.append(pd.DataFrame(values, columns=names))
        if "quality" in self.groups:
            parts.append(quality_stats(np.stack([to_array(img, self.quality_px) for img in images])))
        if "faces" in self.groups:
            parts.append(faces.face_features(images, self.faces_px))
        if "embeddings" in self.groups:
            from pipelines.features import embeddings  # torch: imported by the featurizers that embed, not by every command

            z = embeddings.embed(images, self.embed_backbone, self.embed_px, self.embed_flip, network=network)
            parts.append(pd.DataFrame(z, columns=[f"emb{i}" for i in range(z.shape[1])]))
        if "social" in self.groups:
            missing = pd.DataFrame(index=range(len(images)))
            parts.append(social_features(social if social is not None else missing))
        return pd.concat(parts, axis=1)

"""The monitored features of an image: what the drift reference stores and the service logs per request.

Cheap summaries that move when the inputs move: the quality statistics, the dominant colour (its RGB
and its share of the image), the face count, and the CNN embedding projected on its first principal
components (a PCA fitted on the training images). The fitted projection travels with the model as
plain JSON, and one ``Profiler`` computes the reference at training time and the request log's rows
in the service's batched step, so the two cannot disagree on how a feature is computed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.decomposition import PCA

from pipelines.data.images import to_array
from pipelines.features import faces, quality
from pipelines.features.colors import dominant_colors
from pipelines.features.monitored import DOMINANT, PROJECTION_PREFIX

if TYPE_CHECKING:
    from pipelines.runtime import Choice


@dataclass
class Profiler:
    quality_px: int = 128
    colors_px: int = 32
    colors_k: int = 3
    faces_px: int = 160
    embed_backbone: str = "mobilenet_v2"
    embed_px: int = 64
    mean: list[float] = field(default_factory=list)  # the embedding's training mean and principal axes;
    components: list[list[float]] = field(default_factory=list)  # empty: no ImageNet weights, no projection

    @classmethod
    def fit(cls, images: list[Image.Image], dims: int, graph: str | None = None, parity: dict | None = None,
            **options) -> Profiler:
        """The profile of ``images``' embedding: its PCA to ``dims``, computed with the trunk's exported
        ``graph`` (as the service will) where :func:`pipelines.runtime.choose` allows it, else with torch."""
        from pipelines.vision import WeightsUnavailable

        profiler = cls(**options)
        if graph is not None:
            profiler.use_graph(graph, parity)
        try:
            z = profiler._embed(images)
        except WeightsUnavailable:
            return profiler
        pca = PCA(min(dims, len(images), z.shape[1]), random_state=0).fit(z)
        profiler.mean, profiler.components = pca.mean_.tolist(), pca.components_.tolist()
        return profiler

    def _embed(self, images: list[Image.Image]) -> np.ndarray:
        from pipelines.features import embeddings  # torch: only where a projection is computed, not in every command

        network = self.__dict__.get("network")  # the trunk's exported graph, when ``use_graph`` chose it
        return embeddings.embed(images, self.embed_backbone, self.embed_px, flip=False, network=network)

    def use_graph(self, graph: str | None, parity: dict | None, runtime: str = "onnx", threads: int = 0) -> Choice:
        """Embed with the trunk's exported ONNX graph where ``runtime.choose`` allows it, else the torch trunk."""
        from pipelines.runtime import onnx_network

        network, choice = onnx_network(runtime, graph, parity, threads)
        if network is not None:
            self.network = network
        return choice

    @property
    def projection_columns(self) -> list[str]:
        return [f"{PROJECTION_PREFIX}{i + 1}" for i in range(len(self.components))]

    def transform(self, images: list[Image.Image]) -> pd.DataFrame:
        """One row of monitored features per image, all computed from one small copy of it."""
        images = [_shrunk(img, max(self.quality_px, self.faces_px)) for img in images]
        parts = [quality.quality_stats(np.stack([to_array(img, self.quality_px) for img in images]))]
        palette = dominant_colors(np.stack([to_array(img, self.colors_px) for img in images]), self.colors_k)
        parts.append(pd.DataFrame(palette[:, 0], columns=DOMINANT))
        parts.append(faces.face_features(images, self.faces_px)[["face_count"]])
        if self.components:
            z = self._embed(images) - np.asarray(self.mean, dtype=np.float32)
            projected = z @ np.asarray(self.components, dtype=np.float32).T
            parts.append(pd.DataFrame(projected, columns=self.projection_columns))
        return pd.concat(parts, axis=1)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profiler:
        return cls(**json.loads(Path(path).read_text()))


def _shrunk(img: Image.Image, px: int) -> Image.Image:
    small = img.copy()
    small.thumbnail((px, px), Image.Resampling.BILINEAR)
    return small

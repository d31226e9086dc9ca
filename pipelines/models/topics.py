"""What a photo shows and how it looks, as a few numbers a linear model can weigh (issue 25).

A ridge on the raw 1,280-d ImageNet embedding needs a heavy penalty on a few hundred noisy posts, and
that penalty also shrinks the handful of directions that matter. :class:`VisualTopics` summarises the
embedding instead: PCA, then k-means over the training photos ("visual topics": the kinds of scene the
posts show), each photo described by its soft membership of every topic. :class:`LogStats` puts colour
and brightness statistics on a log scale as well, where an enhancement that multiplies a photo's chroma
or luminance adds a constant, whatever the scene. Both are fitted on the training split inside the
model, so serving describes a request's photo exactly as training did.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


class VisualTopics(TransformerMixin, BaseEstimator):
    """Embedding → PCA (``components``) → k-means (``topics``) → each row's soft membership of the topics,
    ``exp(-(d / s)²)`` normalised to sum to one, ``d`` its distance to a topic's centre and ``s`` the
    training rows' median distance to their nearest centre (fewer topics when there are fewer rows)."""

    def __init__(self, topics: int = 12, components: int = 32, seed: int = 0):
        self.topics = topics
        self.components = components
        self.seed = seed

    def fit(self, X, y=None):
        x = np.asarray(X, dtype=float)
        components = max(1, min(self.components, x.shape[0] - 1, x.shape[1]))
        self.reduce_ = make_pipeline(StandardScaler(), PCA(components, random_state=self.seed)).fit(x)
        z = self.reduce_.transform(x)
        self.n_topics_ = max(1, min(self.topics, len(np.unique(z, axis=0))))
        self.kmeans_ = KMeans(self.n_topics_, n_init=4, random_state=self.seed).fit(z)
        nearest = self.kmeans_.transform(z).min(1)
        self.scale_ = float(np.median(nearest)) or 1.0
        return self

    def transform(self, X) -> np.ndarray:
        d = self.kmeans_.transform(self.reduce_.transform(np.asarray(X, dtype=float))) / self.scale_
        w = np.exp(-(d**2 - (d**2).min(1, keepdims=True)))  # shifted by each row's nearest: no underflow
        return w / w.sum(1, keepdims=True)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"topic{i}" for i in range(self.n_topics_)], dtype=object)


class LogStats(TransformerMixin, BaseEstimator):
    """Each (non-negative) statistic beside its logarithm, ``log(max(x, floor))``."""

    def __init__(self, floor: float = 1e-4):
        self.floor = floor

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        self.names_ = np.asarray(getattr(X, "columns", [f"x{i}" for i in range(self.n_features_in_)]), dtype=object)
        return self

    def transform(self, X) -> np.ndarray:
        x = np.asarray(X, dtype=float)
        return np.concatenate([x, np.log(np.maximum(x, self.floor))], axis=1)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        names = self.names_ if input_features is None else np.asarray(input_features, dtype=object)
        return np.concatenate([names, np.array([f"log_{n}" for n in names], dtype=object)])

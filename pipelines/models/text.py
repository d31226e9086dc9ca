"""A post's words as a few numbers (seed 002: "the features that contained string were converted into
embeddings"): hashed TF-IDF of the tags, title and description, reduced by truncated SVD, fitted on the
training split inside the model so that serving embeds a request's words exactly as training did.

Hashing needs no vocabulary to store (a tag unseen in training still has its column, and nothing grows
with the data); SVD keeps the directions along which the training posts' words vary most (LSA).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.pipeline import make_pipeline

from pipelines.features.social import TEXT_FEATURE

TOKEN_PATTERN = r"[^\s|,;#]+"


def _texts(X) -> list[str]:
    column = X.iloc[:, 0] if isinstance(X, pd.DataFrame) else pd.Series(np.asarray(X, dtype=object).ravel())
    return [str(t) if isinstance(t, str) else "" for t in column]


class TextEmbedding(TransformerMixin, BaseEstimator):
    """Hashed TF-IDF → truncated SVD: ``components`` numbers per text (fewer when the training texts
    span fewer directions; zeros for a text with no known word)."""

    def __init__(self, components: int = 16, n_features: int = 2**16, seed: int = 0):
        self.components = components
        self.n_features = n_features
        self.seed = seed

    def _hash(self, X):
        return HashingVectorizer(n_features=self.n_features, token_pattern=TOKEN_PATTERN, alternate_sign=False,
                                 norm=None).transform(_texts(X))

    def fit(self, X, y=None):
        counts = self._hash(X)
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(counts)
        weighted = self.tfidf_.transform(counts)
        used = np.unique(weighted.nonzero()[1]).size
        self.n_components_ = max(1, min(self.components, used - 1, weighted.shape[0] - 1))
        self.svd_ = (TruncatedSVD(self.n_components_, random_state=self.seed).fit(weighted)
                     if used > 1 and weighted.shape[0] > 1 else None)
        return self

    def transform(self, X) -> np.ndarray:
        if self.svd_ is None:
            return np.zeros((len(_texts(X)), self.n_components_))
        return self.svd_.transform(self.tfidf_.transform(self._hash(X)))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array([f"text{i}" for i in range(self.n_components_)], dtype=object)


def text_steps(x: pd.DataFrame, components: int, seed: int = 0) -> list:
    """The steps that turn ``x``'s ``text`` column into its embedding (and pass every other column on,
    as a DataFrame), or none when ``x`` has no text column."""
    if TEXT_FEATURE not in x:
        return []
    embed = ColumnTransformer([("text", TextEmbedding(components, seed=seed), TEXT_FEATURE)],
                              remainder="passthrough", verbose_feature_names_out=False)
    return [embed.set_output(transform="pandas")]


def with_text(estimator, x: pd.DataFrame, components: int, seed: int = 0):
    """``estimator`` behind the text embedding when ``x`` has a text column."""
    steps = text_steps(x, components, seed)
    return make_pipeline(*steps, estimator) if steps else estimator

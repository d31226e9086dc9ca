"""30-day engagement sequences as scale × shape (seed 002, after Ortis et al.).

The scale is the views on day 30; the shape is the sequence divided by its scale. Shapes are
clustered into prototypes (k-means, k = 50, or mean-shift, bandwidth 0.53); a random forest assigns
a prototype from the features, an SVR predicts the log scale, and the predicted sequence is
scale × prototype. As a pyfunc the model's ``score`` is the predicted log scale (regression) or, for
a binary task, the probability of "popular" given that scale.

The nowcast reads the same sequences early: day-30 views from the image, the user and the first k
days' views (k = 1 … 7), so a post can be scored hours after it went out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cluster import KMeans, MeanShift
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_selection import VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from pipelines.evaluation import trimmed_rmse
from pipelines.models.text import text_steps

DAYS = 30
#: The feature groups the sequence models read beside the daily views.
SEQUENCE_GROUPS = ("social", "colors", "quality")


def sequence_columns(frame: pd.DataFrame) -> list[str]:
    return [f"views_d{d}" for d in range(1, DAYS + 1) if f"views_d{d}" in frame]


def scale_shape(sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shape)``: the last day's views and the sequence divided by them (0 stays 0)."""
    sequences = np.maximum.accumulate(np.asarray(sequences, dtype=float), axis=1)
    scale = sequences[:, -1]
    return scale, sequences / np.where(scale > 0, scale, 1.0)[:, None]


def prototypes(shapes: np.ndarray, method: str, clusters: int, bandwidth: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(prototypes, assignment)`` of the shapes by k-means or mean-shift."""
    if method == "kmeans":
        k = max(1, min(clusters, len(np.unique(shapes.round(4), axis=0))))
        model = KMeans(k, n_init=4, random_state=seed).fit(shapes)
    elif method == "meanshift":
        model = MeanShift(bandwidth=bandwidth).fit(shapes)  # every shape seeds: grid bins miss in 30-d
    else:
        raise ValueError(f"unknown shape clustering {method!r}; expected kmeans or meanshift")
    return model.cluster_centers_, model.labels_


class ScaleShapeRegressor(RegressorMixin, BaseEstimator):
    """Fits on features ``X`` and 30-day cumulative sequences ``Y`` (N×30); predicts sequences."""

    def __init__(self, method: str = "kmeans", clusters: int = 50, bandwidth: float = 0.53, C: float = 1.0,
                 trees: int = 200, seed: int = 0, text_components: int = 16):
        self.method = method
        self.clusters = clusters
        self.bandwidth = bandwidth
        self.C = C
        self.trees = trees
        self.seed = seed
        self.text_components = text_components  # a post's words, embedded when X has a text column

    def fit(self, X, Y, labels=None):
        scale, shapes = scale_shape(Y)
        self.prototypes_, assignment = prototypes(shapes, self.method, self.clusters, self.bandwidth, self.seed)
        self.shape_forest_ = make_pipeline(
            *text_steps(X, self.text_components, self.seed),
            SimpleImputer(strategy="median", keep_empty_features=True),
            RandomForestClassifier(self.trees, min_samples_leaf=2, n_jobs=2, random_state=self.seed),
        ).fit(X, assignment)
        self.scale_svr_ = make_pipeline(*text_steps(X, self.text_components, self.seed),
                                        SimpleImputer(strategy="median", keep_empty_features=True),
                                        StandardScaler(), SVR(C=self.C)).fit(X, np.log1p(scale))
        if labels is not None:  # P(popular | log scale), fitted on the true scales to avoid in-sample optimism
            self.popular_ = LogisticRegression().fit(np.log1p(scale)[:, None], np.asarray(labels).astype(int))
            self.classes_ = self.popular_.classes_
        return self

    def predict(self, X) -> np.ndarray:
        """The predicted log(1 + views on day 30)."""
        return self.scale_svr_.predict(X)

    def predict_proba(self, X) -> np.ndarray:
        if not hasattr(self, "popular_"):
            raise AttributeError("fitted without labels: no probability of popular")
        return self.popular_.predict_proba(self.predict(X)[:, None])

    def predict_sequence(self, X) -> np.ndarray:
        shape = self.prototypes_[self.shape_forest_.predict(X)]
        return np.expm1(self.predict(X))[:, None] * shape


class NowcastRegressor(RegressorMixin, BaseEstimator):
    """Day-30 views from the image and social features plus the first ``days`` days' cumulative views
    (``views_d1`` …): a post's prospects scored hours after posting. Predicts log(1 + views on day 30), or
    the ``target`` it was fitted on; fitted with labels, also the probability of "popular" given that prediction.

    ``X`` holds the features and the early-views columns; the columns of later days are not read.
    """

    def __init__(self, days: int = 3, max_iter: int = 300, learning_rate: float = 0.05, seed: int = 0,
                 text_components: int = 16):
        self.days = days
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.seed = seed
        self.text_components = text_components

    def _inputs(self, X: pd.DataFrame) -> pd.DataFrame:
        later = [c for c in X.columns if c.startswith("views_d") and int(c[len("views_d"):]) > self.days]
        return X.drop(columns=later)

    def fit(self, X: pd.DataFrame, Y, labels=None, target=None):
        """``target``: what to regress instead of log(1 + views on day 30), e.g. the score task's popularity
        score, so that a served score is on the task's scale."""
        scale, _ = scale_shape(Y)
        # boosting fails on a column with no value at all (a social column the source lacks): drop those
        inputs = self._inputs(X)
        self.regressor_ = make_pipeline(*text_steps(inputs, self.text_components, self.seed), VarianceThreshold(),
                                        HistGradientBoostingRegressor(max_iter=self.max_iter,
                                                                      learning_rate=self.learning_rate,
                                                                      random_state=self.seed))
        self.regressor_.fit(inputs, np.log1p(scale) if target is None else np.asarray(target, dtype=float))
        if labels is not None:  # P(popular | log views), fitted on the true views as the scale × shape model
            self.popular_ = LogisticRegression().fit(np.log1p(scale)[:, None], np.asarray(labels).astype(int))
            self.classes_ = self.popular_.classes_
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.regressor_.predict(self._inputs(X))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "popular_"):
            raise AttributeError("fitted without labels: no probability of popular")
        return self.popular_.predict_proba(self.predict(X)[:, None])


def sequence_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Trimmed (25% each side) and median RMSE over the 30 days, in log(1 + views) (seed 002)."""
    err = np.log1p(np.maximum(pred, 0)) - np.log1p(np.asarray(true, dtype=float))
    per_image = np.sqrt((err**2).mean(1))
    return {"seq_trimmed_rmse": trimmed_rmse(np.zeros(err.size), err.ravel()),
            "seq_median_rmse": float(np.median(per_image))}


def feature_spearman(x: pd.DataFrame, target: np.ndarray) -> pd.DataFrame:
    """Spearman ρ of every numeric feature with the target, strongest first (seed 002)."""
    rows = []
    for column in x.select_dtypes("number").columns:
        values = x[column].to_numpy(dtype=float)
        ok = np.isfinite(values)
        rho = spearmanr(values[ok], target[ok]).statistic if ok.sum() > 2 and np.std(values[ok]) > 0 else np.nan
        rows.append({"feature": column, "spearman": float(rho)})
    return pd.DataFrame(rows).sort_values("spearman", key=np.abs, ascending=False, na_position="last")

"""The scikit-learn candidates: one recipe per method of the seeds, and the challenge-winning recipe.

A recipe names the feature groups it reads and builds an estimator from its hyper-parameters;
searches over hyper-parameters use folds grouped by user or category, so that a user's photos never
sit on both sides of a fold (the frozen test split stays untouched).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    VotingClassifier,
    VotingRegressor,
)
from sklearn.feature_selection import VarianceThreshold
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (makes IterativeImputer importable)
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR

from pipelines.features.quality import NAMES as QUALITY_NAMES
from pipelines.features.social import NAMES as SOCIAL_NAMES
from pipelines.features.social import TEXT_FEATURE
from pipelines.models.topics import LogStats, VisualTopics
from pipelines.settings import TrainSettings

SOCIAL_NUMBERS = [n for n in SOCIAL_NAMES if n != TEXT_FEATURE]
VISUAL_TOPICS = 12  # the topics recipes' k-means clusters of the embedding (``--tune`` searches 4–48)


@dataclass(frozen=True)
class Recipe:
    """Feature groups, what they need at serving time, defaults, an estimator builder and a search."""

    groups: tuple[str, ...]
    inputs: str  # "image", "social" or "image+social": what a prediction needs
    defaults: Callable[[TrainSettings, bool], dict]
    build: Callable[[str, dict, TrainSettings], BaseEstimator]
    grid: Callable[[TrainSettings], dict] | None = None  # swept with grouped folds on the training split
    space: Callable[[object], dict] | None = None  # Optuna search space (``--tune``)


def _imputed(*steps):
    """Social columns may be missing at serving time; estimators without NaN support get the training
    split's median and, for each column that had gaps, an indicator that the value was missing."""
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                         StandardScaler(), *steps)


def _calibrated(estimator):
    """Platt-free probabilities for margin classifiers: isotonic would overfit the small demo sets."""
    return CalibratedClassifierCV(estimator, method="sigmoid", ensemble=False, cv=3)


def _poly_svm(task: str, p: dict, s: TrainSettings):
    if task == "binary":
        return _imputed(_calibrated(SVC(kernel="poly", degree=3, C=p["C"], max_iter=p.get("max_iter", -1))))
    return _imputed(SVR(kernel="poly", degree=3, C=p["C"], max_iter=p.get("max_iter", -1)))


def _linear_svm(task: str, p: dict, s: TrainSettings):
    if task == "binary":
        return _imputed(_calibrated(LinearSVC(C=p["C"], max_iter=5000)))
    return _imputed(LinearSVR(C=p["C"], max_iter=5000))


def _linear_head(task: str, p: dict, s: TrainSettings):
    """Logistic (binary) or ridge (score) regression, the L2 penalty chosen by cross-validation on the
    training split (``penalty`` fixes it: ``--tune``)."""
    if "penalty" in p:
        return LogisticRegression(C=1 / p["penalty"], max_iter=5000) if task == "binary" else Ridge(p["penalty"])
    if task == "binary":
        return LogisticRegressionCV(Cs=np.logspace(-5, 3, 17).tolist(), l1_ratios=(0.0,), cv=s.cv_folds,
                                    scoring="neg_log_loss", max_iter=5000, random_state=s.seed,
                                    use_legacy_attributes=False)
    return RidgeCV(alphas=np.logspace(-2, 5, 30).tolist())


def _penalised_linear(task: str, p: dict, s: TrainSettings):
    """The linear head on standardised features, gaps imputed (:func:`_imputed`)."""
    return _imputed(_linear_head(task, p, s))


def _named(names: list[str]):
    return make_column_selector(pattern="^(?:" + "|".join(map(re.escape, names)) + ")$")


def _topics_linear(task: str, p: dict, s: TrainSettings):
    """The linear head on a few numbers per post (issue 25): the photo's soft membership of visual topics
    (:class:`~pipelines.models.topics.VisualTopics` over the ImageNet embedding), colour and quality
    statistics beside their logarithms, and, where the recipe reads them, the social numbers (a missing
    one estimated from the post's other social numbers, fitted on the training split, with a missing
    indicator: seed 002's "interpolated") and the text embedding. Groups a table lacks select nothing."""
    stats = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), LogStats(), StandardScaler())
    social = make_pipeline(IterativeImputer(add_indicator=True, random_state=s.seed), StandardScaler())
    describe = ColumnTransformer(
        [("visual", VisualTopics(p["topics"], p["pca_components"], s.seed), make_column_selector(pattern=r"^emb\d+$")),
         ("statistics", stats, _named(QUALITY_NAMES)),
         ("social", social, _named(SOCIAL_NUMBERS)),
         ("text", StandardScaler(), make_column_selector(pattern=r"^text\d+$"))],
        remainder="drop")
    return make_pipeline(describe, _linear_head(task, p, s))


def _linear_mean(task: str, p: dict, s: TrainSettings):
    """The mean of two linear models' scores (probabilities, for the binary task): one on the whole
    embedding beside the colour and quality statistics (``emb-linear``), one on its visual topics and the
    statistics' logs (``topics-linear``). Each reads what the other misses: the first the directions of
    the embedding that no topic summarises, the second the few numbers that its penalty would shrink."""
    fixed = {k: v for k, v in p.items() if k != "penalty"}
    parts = [("embedding", _penalised_linear(task, {}, s)), ("topics", _topics_linear(task, fixed, s))]
    return VotingClassifier(parts, voting="soft") if task == "binary" else VotingRegressor(parts)


def _topics_defaults(s: TrainSettings) -> dict:
    return {"topics": VISUAL_TOPICS, "pca_components": s.pca_components}


def _topics_space(trial, penalty: bool = True) -> dict:
    chosen = {"topics": trial.suggest_int("topics", 4, 48, log=True),
              "pca_components": trial.suggest_int("pca_components", 4, 64, log=True)}
    return {"penalty": trial.suggest_float("penalty", 1e-3, 1e5, log=True), **chosen} if penalty else chosen


def _forest(task: str, p: dict, s: TrainSettings):
    kind = RandomForestClassifier if task == "binary" else RandomForestRegressor
    return kind(n_estimators=p["n_estimators"], min_samples_leaf=p["min_samples_leaf"], max_features="sqrt",
                n_jobs=2, random_state=s.seed)


def _boosting(task: str, p: dict, s: TrainSettings):
    """Boosting bins missing values itself but fails on a column with no value at all (a social column the
    source lacks, e.g. followers in seed 002's data), so columns without variance are dropped first."""
    kind = HistGradientBoostingClassifier if task == "binary" else HistGradientBoostingRegressor
    return make_pipeline(VarianceThreshold(), kind(
        max_iter=p["max_iter"], learning_rate=p["learning_rate"], max_leaf_nodes=p["max_leaf_nodes"],
        l2_regularization=p.get("l2_regularization", 0.0), random_state=s.seed))


def _boosting_on_pca(task: str, p: dict, s: TrainSettings):
    """PCA-reduced CNN embeddings beside the other features (social, colour, quality) → gradient boosting
    (the SMP challenge winners' recipe)."""
    reduce = ColumnTransformer(
        [("embeddings", make_pipeline(StandardScaler(), PCA(p["pca_components"], random_state=s.seed)),
          make_column_selector(pattern=r"^emb\d+$"))],
        remainder="passthrough", verbose_feature_names_out=False,
    )
    return make_pipeline(reduce, _boosting(task, p, s))


def _boosting_defaults(quick: bool) -> dict:
    return {"max_iter": 100 if quick else 300, "learning_rate": 0.05, "max_leaf_nodes": 15}


def _boosting_space(trial) -> dict:
    return {"max_iter": trial.suggest_int("max_iter", 50, 500, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 4, 63, log=True),
            "l2_regularization": trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True)}


RECIPES: dict[str, Recipe] = {
    # seed 000: polynomial SVM on dominant colours, C swept with grouped folds
    "colors-svm": Recipe(("colors",), "image", lambda s, q: {"C": 1.0}, _poly_svm,
                         grid=lambda s: {"C": [1e-2, 1e-1, 1.0, 10.0]},
                         space=lambda t: {"C": t.suggest_float("C", 1e-3, 1e5, log=True)}),
    # seed 000 exactly: degree 3, C = 1e5 (capped iterations: libsvm crawls at that C)
    "colors-svm-fixed": Recipe(("colors",), "image", lambda s, q: {"C": s.svm_fixed_c, "max_iter": 200_000},
                              _poly_svm),
    "stats-gb": Recipe(("colors", "quality"), "image", lambda s, q: _boosting_defaults(q), _boosting,
                       space=_boosting_space),
    # seed 003: linear SVM on CNN features, C swept from 1e-6 to 1e5
    "svm-linear": Recipe(("embeddings",), "image", lambda s, q: {"C": 1.0}, _linear_svm,
                         grid=lambda s: {"C": s.svm_c_grid},
                         space=lambda t: {"C": t.suggest_float("C", 1e-6, 1e5, log=True)}),
    # seed 003: random forest of 500 trees on CNN features
    "forest": Recipe(("embeddings",), "image",
                     lambda s, q: {"n_estimators": 100 if q else s.forest_trees, "min_samples_leaf": 2}, _forest,
                     space=lambda t: {"n_estimators": t.suggest_int("n_estimators", 100, 1000, log=True),
                                      "min_samples_leaf": t.suggest_int("min_samples_leaf", 1, 20, log=True)}),
    # seed 003's transfer learning: a linear model on the frozen ImageNet embedding, with colour and quality
    # statistics beside it; on small, noisy targets it learns what fine-tuning and boosting overfit
    "emb-linear": Recipe(("colors", "quality", "embeddings"), "image", lambda s, q: {}, _penalised_linear,
                         space=lambda t: {"penalty": t.suggest_float("penalty", 1e-3, 1e5, log=True)}),
    # issue 25: the embedding as a few visual topics, colour and brightness on a log scale, a linear head
    "topics-linear": Recipe(("quality", "embeddings"), "image", lambda s, q: _topics_defaults(s), _topics_linear,
                            space=_topics_space),
    # the mean of emb-linear and topics-linear: the image-only default
    "emb-topics-linear": Recipe(("colors", "quality", "embeddings"), "image", lambda s, q: _topics_defaults(s),
                                _linear_mean, space=lambda t: _topics_space(t, penalty=False)),
    # beyond the seeds: what social features alone carry, and the challenge recipe with the pixels added
    "social-gb": Recipe(("social",), "social", lambda s, q: _boosting_defaults(q), _boosting,
                        space=_boosting_space),
    "social-emb-gb": Recipe(("social", "colors", "quality", "embeddings"), "image+social",
                            lambda s, q: {**_boosting_defaults(q), "pca_components": s.pca_components},
                            _boosting_on_pca,
                            grid=lambda s: {"learning_rate": [0.03, 0.1]},
                            space=lambda t: {**_boosting_space(t),
                                             "pca_components": t.suggest_int("pca_components", 4, 64, log=True)}),
    # the same with a linear head on the social and text features, the visual topics and the statistics:
    # on seed 002's layout a post's log views add the user's reach to what the photo shows
    "social-topics-linear": Recipe(("social", "quality", "embeddings"), "image+social",
                                   lambda s, q: _topics_defaults(s), _topics_linear, space=_topics_space),
}


def grid_key(estimator: BaseEstimator, name: str) -> str:
    """The nested parameter path of ``name`` inside a built estimator (``svc__C``, …)."""
    keys = [k for k in estimator.get_params() if k == name or k.endswith(f"__{name}")]
    if not keys:
        raise KeyError(f"{type(estimator).__name__} has no parameter {name!r}")
    return min(keys, key=len)


def _spearman(y, pred) -> float:
    return float(spearmanr(y, pred).statistic) if np.std(pred) > 0 else 0.0


def grouped_folds(groups, folds: int) -> GroupKFold:
    """``folds`` folds grouped by ``groups`` (one user's photos never on both sides), at most one per group."""
    return GroupKFold(n_splits=max(2, min(folds, len(np.unique(groups)))))


def grouped_search(estimator: BaseEstimator, grid: dict, x, y, groups, task: str, folds: int):
    """Sweep ``grid`` with folds grouped by ``groups``; returns the refitted search."""
    search = GridSearchCV(
        estimator, {grid_key(estimator, k): v for k, v in grid.items()},
        cv=grouped_folds(groups, folds),
        scoring="roc_auc" if task == "binary" else make_scorer(_spearman),
        n_jobs=1, error_score=np.nan,
    )
    return search.fit(x, y, groups=groups)

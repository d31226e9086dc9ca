"""Training: every candidate is fitted, logged as the project's pyfunc in a child MLflow run, and
scored through the logged model itself on the same frozen test split.

Run as a module it trains without Prefect; under ``torchrun --nproc_per_node N`` the CNN candidates
train data-parallel and rank 0 alone logs to MLflow::

    torchrun --nproc_per_node 2 -m pipelines.training --models cnn
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from pipelines import evaluation, splits
from pipelines.features import ImageFeaturizer, faces, snapshot_features
from pipelines.features.profile import Profiler
from pipelines.features.social import social_inputs
from pipelines.images import decode, to_array, to_jpeg
from pipelines.models import backends, classical, cnn, distributed, sequences
from pipelines.models.pyfunc import log_model
from pipelines.settings import Settings
from pipelines.snapshots import Snapshot

TARGET = {"binary": "label", "score": "score"}
GROUP_ORDER = ("colors", "quality", "faces", "embeddings", "social")


@dataclass
class TrainingData:
    """A snapshot's splits for one task, with images decoded once and kept in memory.

    ``split`` is ``group`` (the snapshot's grouped split) or ``time`` (the latest posts are the test
    split); ``require_faces`` keeps only images with a confident face (seed 003). Both default to the
    training settings.
    """

    snapshot: Snapshot
    task: str
    settings: Settings
    split: str | None = None
    require_faces: bool | None = None
    log_epochs: bool = True

    def __post_init__(self) -> None:
        target = TARGET[self.task]
        s = self.settings.train
        self.split = self.split or s.split
        self.require_faces = s.require_faces if self.require_faces is None else self.require_faces
        if target not in self.snapshot.manifest:
            raise ValueError(f"snapshot {self.snapshot.id} has no {target!r} column for the {self.task} task")
        manifest = self.snapshot.manifest.dropna(subset=[target]).reset_index(drop=True)
        if self.split == "time":
            if "posted_at" not in manifest:
                raise ValueError(f"--split time needs a posted_at column, which snapshot {self.snapshot.id} lacks")
            manifest["split"] = splits.time_splits(manifest["posted_at"], self.settings.splits).to_numpy()
        elif self.split != "group":
            raise ValueError(f"unknown split {self.split!r}; expected group or time")
        if self.require_faces:
            found = self.features(self.featurizer(("faces",))).loc[manifest["image_id"]]
            keep = faces.has_faces(found, self.settings.features.faces_min_confidence).to_numpy()
            if not keep.any():
                raise ValueError(f"--require-faces left no image of snapshot {self.snapshot.id} (no face detected "
                                 f"with confidence >= {self.settings.features.faces_min_confidence})")
            manifest = manifest[keep].reset_index(drop=True)
        self.manifest = self._ensure_val(manifest)

    def _ensure_val(self, manifest: pd.DataFrame) -> pd.DataFrame:
        """Few groups can leave the hashed val split empty: take a grouped share of train for it then."""
        if (manifest["split"] == "val").any():
            return manifest
        train = manifest.index[manifest["split"] == "train"]
        groups = (manifest["group"] if "group" in manifest else manifest["image_id"]).astype(str)
        if groups[train].nunique() < 2:
            raise ValueError(f"snapshot {self.snapshot.id} has too few groups in train for a validation split")
        share = self.settings.splits.val / (self.settings.splits.train + self.settings.splits.val)
        _, held = next(GroupShuffleSplit(1, test_size=share, random_state=self.settings.train.seed)
                       .split(train, groups=groups[train]))
        split = manifest["split"].to_numpy().copy()
        split[train[held]] = "val"
        return manifest.assign(split=split)

    def rows(self, split: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == split]

    def y(self, split: str) -> np.ndarray:
        return self.rows(split)[TARGET[self.task]].to_numpy()

    def groups(self, split: str) -> np.ndarray:
        rows = self.rows(split)
        return (rows["group"] if "group" in rows else rows["image_id"]).astype(str).to_numpy()

    def engagement(self, split: str) -> np.ndarray:
        """A continuous engagement value behind the target, for ordinal bins and ranking pairs."""
        rows = self.rows(split)
        if self.task == "binary":
            for column in ("likes_per_follower", "score"):
                if column in rows and rows[column].notna().all():
                    return rows[column].to_numpy(dtype=float)
        return self.y(split).astype(float)

    def social(self, split: str) -> pd.DataFrame:
        return social_inputs(self.rows(split))

    @cached_property
    def images(self) -> dict[str, Image.Image]:
        limits = self.settings.images
        return {row.image_id: decode(self.snapshot.read_image(row.image_path), limits.max_bytes,
                                     limits.max_pixels)[0] for row in self.manifest.itertuples()}

    @cached_property
    def profiler(self) -> Profiler:
        """The drift monitor's features, with the embedding's PCA fitted on the training images."""
        return Profiler.fit(self.split_images("train"), self.settings.drift.projection_dims)

    @cached_property
    def test_profile(self) -> pd.DataFrame:
        """The test split's monitored features: every candidate's drift reference, beside its scores."""
        profile = self.profiler.transform(self.split_images("test"))
        profile.insert(0, "image_id", self.rows("test")["image_id"].to_numpy())
        return profile

    def split_images(self, split: str) -> list[Image.Image]:
        return [self.images[i] for i in self.rows(split)["image_id"]]

    def pixels(self, split: str, px: int) -> np.ndarray:
        return np.stack([to_array(self.images[i], px) for i in self.rows(split)["image_id"]])

    def featurizer(self, groups: tuple[str, ...]) -> ImageFeaturizer:
        f = self.settings.features
        return ImageFeaturizer(groups=tuple(g for g in GROUP_ORDER if g in groups), colors_k=f.colors_k,
                               colors_px=f.colors_px, colors_iters=f.colors_iters, faces_px=f.faces_px,
                               embed_backbone=f.embed_backbone, embed_px=f.embed_px, embed_flip=f.embed_flip)

    def features(self, featurizer: ImageFeaturizer) -> pd.DataFrame:
        """The snapshot's features, each group computed once and cached, whichever candidate asks."""
        parts = [snapshot_features(self.snapshot, replace(featurizer, groups=(g,)), self.settings.features_dir,
                                   self.settings.images, self.settings.features.batch_size)
                 for g in featurizer.groups]
        return pd.concat(parts, axis=1)

    def x(self, split: str, featurizer: ImageFeaturizer) -> pd.DataFrame:
        return self.features(featurizer).loc[self.rows(split)["image_id"]]

    def view(self, manifest: pd.DataFrame | None = None) -> TrainingData:
        """The same data on other rows or splits (repeats, trials): images and features stay shared and
        per-epoch metrics are not logged, so the candidate's own curves stay clean."""
        other = copy.copy(self)
        other.manifest = self.manifest if manifest is None else manifest.reset_index(drop=True)
        other.log_epochs = False
        return other

    @cached_property
    def dataset(self):
        return mlflow.data.from_pandas(self.manifest.drop(columns=["posted_at"], errors="ignore"),
                                       source=str(self.snapshot.path), name=self.snapshot.id,
                                       targets=TARGET[self.task])


@dataclass
class Fitted:
    """What a trainer hands back: the model's config and files, its parameters and its history,
    and any metrics or tables only this kind of model has (CV scores, sequence errors, importances)."""

    config: dict
    artifacts: dict[str, str]
    params: dict
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


@dataclass
class Candidate:
    name: str
    family: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    params: dict
    inputs: str = "image"


Trainer = Callable[..., Fitted]


def _primary(task: str) -> str:
    return evaluation.PRIMARY[task]


# --- classical candidates -------------------------------------------------------------------------

def _sklearn_config(data: TrainingData, featurizer: ImageFeaturizer, columns: list[str]) -> dict:
    return {"kind": "sklearn", "task": data.task,
            "featurizer": asdict(featurizer) | {"groups": list(featurizer.groups)}, "columns": columns}


def _importances(estimator, columns: list[str]) -> dict[str, pd.DataFrame]:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not hasattr(final, "feature_importances_") or len(final.feature_importances_) != len(columns):
        return {}
    table = pd.DataFrame({"feature": columns, "importance": final.feature_importances_})
    return {"feature_importances": table.sort_values("importance", ascending=False)}


def _fit_recipe(name: str) -> Trainer:
    recipe = classical.RECIPES[name]

    def fit(data: TrainingData, workdir: Path, quick: bool, params: dict | None = None) -> Fitted:
        s = data.settings.train
        featurizer = data.featurizer(recipe.groups)
        x, y = data.x("train", featurizer), data.y("train")
        chosen = recipe.defaults(s, quick) | (params or {})
        if "pca_components" in chosen:  # no more components than a grouped fold has rows
            chosen["pca_components"] = max(1, min(chosen["pca_components"], len(x) * (s.cv_folds - 1) // s.cv_folds - 1))
        estimator = recipe.build(data.task, chosen, s)
        metrics = {}
        if recipe.grid and not params:
            search = classical.grouped_search(estimator, recipe.grid(s), x, y, data.groups("train"), data.task,
                                              s.cv_folds)
            estimator = search.best_estimator_
            chosen |= {k.rsplit("__", 1)[-1]: v for k, v in search.best_params_.items()}
            metrics[f"cv_{_primary(data.task)}"] = float(search.best_score_)
        else:
            estimator.fit(x, y)
        columns = list(x.columns)
        return Fitted(_sklearn_config(data, featurizer, columns),
                      {"estimator": backends.save_estimator(estimator, workdir / "estimator.skops")},
                      {**chosen, "features": "+".join(recipe.groups)}, metrics=metrics,
                      tables=_importances(estimator, columns))

    fit.__doc__ = f"The {name} recipe of :mod:`pipelines.models.classical`."
    return fit


def _fit_sequences(method: str) -> Trainer:
    def fit(data: TrainingData, workdir: Path, quick: bool, params: dict | None = None) -> Fitted:
        """Seed 002: shape prototypes + random forest for the shape, SVR for the scale."""
        s = data.settings.train
        columns = sequences.sequence_columns(data.manifest)
        if len(columns) < 2:
            raise ValueError(f"the sequence models need daily views views_d1..views_d30; snapshot "
                             f"{data.snapshot.id} has {columns or 'none'}")
        featurizer = data.featurizer(("social", "colors", "quality"))
        x = data.x("train", featurizer)
        chosen = {"method": method, "clusters": s.sequence_clusters, "bandwidth": s.sequence_bandwidth, "C": 1.0,
                  "trees": 100 if quick else 300, "seed": s.seed} | (params or {})
        model = sequences.ScaleShapeRegressor(**chosen)
        train_seq = data.rows("train")[columns].to_numpy(dtype=float)
        model.fit(x, train_seq, labels=data.y("train") if data.task == "binary" else None)
        test_seq = data.rows("test")[columns].to_numpy(dtype=float)
        x_test = data.x("test", featurizer)
        metrics = sequences.sequence_metrics(test_seq, model.predict_sequence(x_test))
        _, test_shapes = sequences.scale_shape(test_seq)
        nearest = ((test_shapes[:, None] - model.prototypes_[None]) ** 2).sum(-1).argmin(1)
        metrics["shape_accuracy"] = float(np.mean(model.shape_forest_.predict(x_test) == nearest))
        metrics["prototypes"] = float(len(model.prototypes_))
        spearman = sequences.feature_spearman(x, np.log1p(sequences.scale_shape(train_seq)[0]))
        return Fitted(_sklearn_config(data, featurizer, list(x.columns)),
                      {"estimator": backends.save_estimator(model, workdir / "estimator.skops")},
                      chosen, metrics=metrics, tables={"feature_spearman": spearman})

    return fit


# --- CNN candidates -------------------------------------------------------------------------------

def _deciles(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, values, side="right").astype(float)


def _calibration(task: str, raw: np.ndarray, truth: np.ndarray) -> list[float]:
    """Maps an ordinal or ranking output onto the task's scale: a logistic fit (binary) or a line."""
    if task == "binary" and len(np.unique(truth)) == 2:
        fit = LogisticRegression(C=1e4).fit(raw[:, None], truth.astype(int))
        return [float(fit.coef_[0, 0]), float(fit.intercept_[0])]
    if task == "binary":
        return [1.0, 0.0]
    slope, intercept = np.polyfit(raw, truth, 1) if np.std(raw) > 0 else (0.0, float(np.mean(truth)))
    return [float(slope), float(intercept)]


def _fit_network(data: TrainingData, workdir: Path, quick: bool, backbone: str, head: str | None,
                 params: dict | None) -> Fitted:
    s = data.settings.train
    head = head or ("bce" if data.task == "binary" else "huber")
    pretrained = backbone != "small_cnn"
    torch.manual_seed(s.seed)  # the new head's initial weights: a run is reproducible, every rank starts alike
    try:
        network = cnn.build_network(backbone, pretrained=pretrained)
    except cnn.WeightsUnavailable as exc:
        if distributed.is_main() and data.log_epochs:
            mlflow.set_tag("fallback", f"small_cnn from scratch: {exc}")
        backbone, pretrained = "small_cnn", False
        network = cnn.build_network(backbone, pretrained=False)
    px = 64 if backbone == "small_cnn" else s.image_px
    overrides = params or {}
    cfg = cnn.FitConfig(image_px=px, epochs=s.quick_epochs if quick else s.epochs, batch_size=s.batch_size,
                        lr=overrides.get("lr", s.lr),
                        head_lr_multiplier=overrides.get("head_lr_multiplier", s.head_lr_multiplier),
                        step_size=s.step_size, patience=s.patience, seed=s.seed, task=data.task, head=head,
                        ranking_margin=s.ranking_margin)
    truth_train, truth_val = data.y("train").astype(float), data.y("val").astype(float)
    mean, std = 0.0, 1.0
    if head == "huber":
        mean, std = float(truth_train.mean()), float(truth_train.std() or 1.0)
        t_train, t_val = (truth_train - mean) / std, (truth_val - mean) / std
    elif head == "ordinal":  # seed 001: equal-frequency bins, Euclidean loss on the bin index
        edges = np.quantile(data.engagement("train"), np.linspace(0, 1, s.ordinal_bins + 1)[1:-1])
        t_train, t_val = _deciles(data.engagement("train"), edges), _deciles(data.engagement("val"), edges)
    elif head == "ranking":
        codes = {g: i for i, g in enumerate(np.unique(np.concatenate([data.groups("train"), data.groups("val")])))}
        t_train, t_val = (np.column_stack([data.engagement(sp), [codes[g] for g in data.groups(sp)]])
                          for sp in ("train", "val"))
    else:
        t_train, t_val = truth_train, truth_val

    def val_metric(_, out):  # always the task's own metric against the true target
        return evaluation.task_metrics(data.task, truth_val, out * std + mean)[_primary(data.task)]

    def log_epoch(epoch: int, row: dict) -> None:
        if data.log_epochs:
            mlflow.log_metrics(row, step=epoch)

    load_px = int(px * 1.15)
    result = cnn.fit(network, (data.pixels("train", load_px), t_train), (data.pixels("val", load_px), t_val),
                     cfg, val_metric, on_epoch=log_epoch)
    weights = workdir / "weights.pt"
    torch.save(result.model.state_dict(), weights)
    config = {"kind": "torch", "task": data.task, "backbone": backbone, "image_px": px,
              "target_mean": mean, "target_std": std}
    if head in ("ordinal", "ranking"):
        raw = cnn.predict(result.model, data.pixels("val", load_px), px)
        config["calibration"] = _calibration(data.task, raw, truth_val)
    fit_params = {k: v for k, v in asdict(cfg).items() if k != "task"}
    fit_params |= {"backbone": backbone, "pretrained": pretrained, "best_epoch": result.best_epoch,
                   "world_size": distributed.world_size()}
    return Fitted(config, {"weights": str(weights)}, fit_params, result.history)


def _cnn_trainer(backbone: str | None, head: str | None, doc: str) -> Trainer:
    def fit(data: TrainingData, workdir: Path, quick: bool, params: dict | None = None) -> Fitted:
        return _fit_network(data, workdir, quick, backbone or data.settings.train.backbone, head, params)

    fit.__doc__ = doc
    return fit


def _cnn_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
            "head_lr_multiplier": trial.suggest_float("head_lr_multiplier", 5.0, 20.0)}


TRAINERS: dict[str, tuple[str, Trainer]] = {
    **{name: ("classical", _fit_recipe(name)) for name in classical.RECIPES},
    "seq-kmeans": ("sequence", _fit_sequences("kmeans")),
    "seq-meanshift": ("sequence", _fit_sequences("meanshift")),
    "cnn": ("cnn", _cnn_trainer(None, None, "The configured backbone fine-tuned from ImageNet (seeds 001, 003).")),
    "cnn-ordinal": ("cnn", _cnn_trainer(None, "ordinal", "Seed 001's ordinal deciles with a Euclidean loss.")),
    "cnn-ranking": ("cnn", _cnn_trainer(None, "ranking", "Margin ranking loss on pairs from one group.")),
    "small-cnn": ("cnn", _cnn_trainer("small_cnn", None, "Seed 004's small CNN from scratch on 64×64 inputs.")),
}
INPUTS = {name: recipe.inputs for name, recipe in classical.RECIPES.items()} | {
    "seq-kmeans": "image+social", "seq-meanshift": "image+social"}
SPACES = {name: recipe.space for name, recipe in classical.RECIPES.items() if recipe.space} | {
    name: _cnn_space for name, (family, _) in TRAINERS.items() if family == "cnn"}


def with_options(settings: Settings, **options) -> Settings:
    """A copy of ``settings`` with the given training options (``None`` keeps the setting), checked."""
    chosen = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(chosen) - set(type(settings.train).model_fields))
    if unknown:
        raise ValueError(f"unknown training options {unknown}")
    if chosen.get("split", "group") not in ("group", "time"):
        raise ValueError(f"--split must be group or time, not {chosen['split']!r}")
    if chosen.get("repeats", 0) < 0:
        raise ValueError("--repeats must be 0 (off) or a number of repeated splits")
    train = settings.train.model_copy(update=chosen)
    return settings.model_copy(update={"train": train})


def check_models(models: list[str]) -> None:
    unknown = sorted(set(models) - set(TRAINERS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(TRAINERS)}")


# --- scoring, repeats and tuning ------------------------------------------------------------------

def score_fitted(fitted: Fitted, data: TrainingData, split: str) -> np.ndarray:
    """Scores of an unlogged model on a split (sklearn models reuse the cached features)."""
    backend = backends.load(fitted.config, fitted.artifacts)
    if fitted.config["kind"] == "sklearn":
        x = data.x(split, backend.featurizer)[backend.columns]
        return backend.estimator.predict_proba(x)[:, 1] if data.task == "binary" else backend.estimator.predict(x)
    return backend.score(data.split_images(split), data.social(split))


def repeat_scores(name: str, data: TrainingData, quick: bool, repeats: int, params: dict | None = None) -> np.ndarray:
    """Seed 002's protocol: K grouped 9:1 splits of the non-test rows, the primary metric of each."""
    pool = data.manifest[data.manifest["split"] != "test"]
    groups = (pool["group"] if "group" in pool else pool["image_id"]).astype(str)
    values = []
    for r, (_, held) in enumerate(GroupShuffleSplit(repeats, test_size=0.1, random_state=data.settings.train.seed)
                                  .split(pool, groups=groups)):
        split = pool["split"].to_numpy().copy()
        split[held] = "test"
        view = data.view(pool.assign(split=split))
        with tempfile.TemporaryDirectory() as tmp:
            fitted = TRAINERS[name][1](view, Path(tmp), quick, params)
            scores = score_fitted(fitted, view, "test")
        values.append(evaluation.task_metrics(data.task, view.y("test"), scores)[_primary(data.task)])
    return np.asarray(values, dtype=float)


def tune(name: str, data: TrainingData, run_id: str, quick: bool) -> dict:
    """Optuna search on the validation split within the time budget; each trial a nested MLflow run."""
    import optuna

    if name not in SPACES:
        raise ValueError(f"{name} has no search space; tunable: {sorted(SPACES)}")
    s = data.settings.train
    quiet = data.view()
    experiment_id = mlflow.get_run(run_id).info.experiment_id

    def objective(trial) -> float:
        params = SPACES[name](trial)
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
            run_name=f"{name}-trial-{trial.number}", parent_run_id=run_id, nested=True, experiment_id=experiment_id
        ):
            mlflow.set_tags({"candidate": name, "trial": trial.number})
            mlflow.log_params(params)
            fitted = TRAINERS[name][1](quiet, Path(tmp), quick, params)
            value = evaluation.task_metrics(data.task, data.y("val"), score_fitted(fitted, quiet, "val"))
            mlflow.log_metrics({f"val_{k}": v for k, v in value.items()})
        primary = value[_primary(data.task)]
        return primary if np.isfinite(primary) else -np.inf

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=s.seed))
    study.optimize(objective, n_trials=s.tune_trials, timeout=s.tune_budget_s)
    mlflow.log_metrics({"tune_trials": len(study.trials), f"tune_best_val_{_primary(data.task)}": study.best_value})
    return study.best_params


# --- logging --------------------------------------------------------------------------------------

def _log_evaluation(data: TrainingData, scores: np.ndarray, out: Path) -> None:
    test = data.rows("test")
    y = data.y("test")
    plots = (evaluation.binary_plots if data.task == "binary" else evaluation.regression_plots)(y, scores, out)
    order = np.argsort(-scores)
    images = [data.images[i] for i in test["image_id"]]
    plots.append(evaluation.image_grid([images[i] for i in order[:25]], scores[order[:25]], "Top 25", out))
    plots.append(evaluation.image_grid([images[i] for i in order[-25:]], scores[order[-25:]], "Bottom 25", out))
    for path in plots:
        mlflow.log_artifact(str(path), "evaluation")


def _log_reference(data: TrainingData, scores: np.ndarray, workdir: Path) -> None:
    """The monitored features and scores of the test split: what the drift monitor compares the
    served requests with (the model carries the same profiler, so the service computes them alike)."""
    path = workdir / "profile.parquet"
    data.test_profile.assign(score=scores).to_parquet(path, index=False)
    mlflow.log_artifact(str(path), "reference")


def _test_metrics(data: TrainingData, scores: np.ndarray) -> dict[str, float]:
    metrics = evaluation.task_metrics(data.task, data.y("test"), scores)
    metrics["pairwise_accuracy"] = evaluation.pairwise_accuracy(data.engagement("test"), scores, data.groups("test"))
    return metrics


def train_candidate(name: str, data: TrainingData, parent_run_id: str, quick: bool = False) -> Candidate | None:
    """Fit ``name``, log it in a child run of ``parent_run_id`` and score the logged model on the test split.

    Under ``torchrun`` the other ranks only take part in fitting and return ``None``.
    """
    family, trainer = TRAINERS[name]
    s = data.settings.train
    if not distributed.is_main():
        with tempfile.TemporaryDirectory() as tmp:
            trainer(data, Path(tmp), quick)
        return None
    # MLflow puts a nested run in the *default* experiment unless told: keep it beside its parent
    experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
        run_name=name, parent_run_id=parent_run_id, nested=True, experiment_id=experiment_id
    ) as run:
        inputs = INPUTS.get(name, "image")
        mlflow.set_tags({"candidate": name, "family": family, "task": data.task, "snapshot": data.snapshot.id,
                         "inputs": inputs, "split": data.split, "require_faces": str(data.require_faces)})
        mlflow.log_input(data.dataset, context="training")
        started = time.perf_counter()
        params = tune(name, data, run.info.run_id, quick) if s.tune and name in SPACES else None
        fitted = trainer(data, Path(tmp), quick, params)
        fit_seconds = time.perf_counter() - started
        mlflow.log_params({**fitted.params, "split": data.split, "require_faces": data.require_faces,
                           "tuned": params is not None})
        fitted.config["limits"] = data.settings.images.model_dump()
        example = to_jpeg(next(iter(data.images.values())))
        profiler = data.profiler.save(Path(tmp) / "profiler.json")
        info = log_model(fitted.config, {**fitted.artifacts, "profiler": str(profiler)}, example)
        model = mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model()
        test = data.rows("test")
        scores = model.predict_images([data.images[i] for i in test["image_id"]], data.social("test"))["score"]
        scores = scores.to_numpy()
        metrics = {**_test_metrics(data, scores), **fitted.metrics, "fit_seconds": fit_seconds}
        if s.repeats > 1:
            values = repeat_scores(name, data, quick, s.repeats, params)
            primary = _primary(data.task)
            metrics |= {f"repeat_{primary}_mean": float(np.nanmean(values)),
                        f"repeat_{primary}_std": float(np.nanstd(values))}
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        for table_name, table in fitted.tables.items():
            mlflow.log_text(table.to_csv(index=False), f"evaluation/{table_name}.csv")
        if fitted.history:
            mlflow.log_artifact(str(evaluation.loss_curves(fitted.history, Path(tmp) / "plots")), "evaluation")
        _log_evaluation(data, scores, Path(tmp) / "plots")
        _log_reference(data, scores, Path(tmp))
        params_out = {**fitted.params, "split": data.split, "require_faces": data.require_faces}
        return Candidate(name, family, run.info.run_id, info.model_uri, metrics, params_out, inputs)


# --- comparison -----------------------------------------------------------------------------------

def oracle_metrics(data: TrainingData) -> dict[str, float]:
    """The demo generator's best achievable scores on the test split; empty for real data."""
    path = data.snapshot.path / "oracle.parquet"
    if not path.exists():
        return {}
    oracle = pd.read_parquet(path).set_index("image_id")
    test = data.rows("test")
    latent = oracle.loc[test["image_id"], "expected_log_ratio"].to_numpy()
    primary = _primary(data.task)
    return {primary: evaluation.task_metrics(data.task, data.y("test"), latent)[primary]}


def comparison_table(candidates: list[Candidate], base: dict[str, float], oracle: dict[str, float],
                     task: str = "binary") -> pd.DataFrame:
    """One row per candidate (family, what it reads) beside the baseline and the oracle."""
    primary = _primary(task)
    rows = []
    for c in candidates:
        row = {"candidate": c.name, "family": c.family, "inputs": c.inputs, **c.metrics}
        if f"repeat_{primary}_mean" in c.metrics:
            row[f"{primary} repeats"] = (f"{c.metrics[f'repeat_{primary}_mean']:.3f} ± "
                                         f"{c.metrics[f'repeat_{primary}_std']:.3f}")
        rows.append(row)
    rows.append({"candidate": "majority/mean baseline", "family": "baseline", "inputs": "-", **base})
    if oracle:
        rows.append({"candidate": "oracle (demo generator)", "family": "oracle", "inputs": "-", **oracle})
    table = pd.DataFrame(rows)
    drop = [c for c in table if c.startswith("repeat_") or c in ("base_rate", "prototypes")]
    return table.drop(columns=drop)


@dataclass
class TrainReport:
    task: str
    snapshot: str
    parent_run_id: str
    candidates: list[Candidate]
    baseline: dict[str, float]
    oracle: dict[str, float]
    table: pd.DataFrame

    @property
    def best(self) -> Candidate:
        primary = _primary(self.task)
        scored = [c for c in self.candidates if np.isfinite(c.metrics[primary])]
        if not scored:
            raise RuntimeError("no candidate produced a finite test metric")
        return max(scored, key=lambda c: c.metrics[primary])

    def summary(self) -> dict:
        return {"task": self.task, "snapshot": self.snapshot, "parent_run_id": self.parent_run_id,
                "best": asdict(self.best), "baseline": self.baseline, "oracle": self.oracle,
                "table": self.table.to_dict(orient="records")}


def summarise(data: TrainingData, candidates: list[Candidate], parent_run_id: str) -> TrainReport:
    """Baseline, oracle and the comparison table of all candidates, logged on the parent run."""
    base = evaluation.baseline(data.task, data.y("train"), data.y("test"))
    oracle = oracle_metrics(data)
    table = comparison_table(candidates, base, oracle, data.task)
    with mlflow.start_run(run_id=parent_run_id):
        mlflow.log_metrics({f"baseline_{k}": v for k, v in base.items()})
        mlflow.log_metrics({f"oracle_{k}": v for k, v in oracle.items()})
        mlflow.log_text(table.to_markdown(index=False, floatfmt=".3f"), "comparison.md")
        mlflow.log_text(table.to_html(index=False, float_format="%.3f"), "comparison.html")
    return TrainReport(data.task, data.snapshot.id, parent_run_id, candidates, base, oracle, table)


def train(snapshot: Snapshot, task: str, models: list[str], settings: Settings, parent_run_id: str,
          quick: bool = False) -> TrainReport:
    """Train ``models`` on ``snapshot`` under an open parent run (the notebook entry point)."""
    check_models(models)
    data = TrainingData(snapshot, task, settings)
    return summarise(data, [train_candidate(name, data, parent_run_id, quick) for name in models], parent_run_id)


def main(argv: list[str] | None = None) -> dict | None:
    """Train without Prefect; under ``torchrun`` CNNs train on every rank and rank 0 logs and reports."""
    from pipelines import tracking
    from pipelines.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m pipelines.training", description=main.__doc__)
    parser.add_argument("snapshot", nargs="?", help="snapshot id, name or path (default: the latest)")
    parser.add_argument("--task", default="binary", choices=sorted(TARGET))
    parser.add_argument("--models", default=None, help="comma-separated candidates (default: settings)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--experiment", default="popularity")
    args = parser.parse_args(argv)
    settings = get_settings()
    models = args.models.split(",") if args.models else settings.train.models
    check_models(models)
    distributed.setup()
    try:
        data = TrainingData(Snapshot.open(settings.datasets_dir, args.snapshot), args.task, settings)
        parent = None
        if distributed.is_main():
            mlflow.set_tracking_uri(settings.tracking_uri)
            with mlflow.start_run(experiment_id=tracking.experiment(settings, args.experiment),
                                  run_name=f"train-{args.task}") as run:
                mlflow.set_tags({"world_size": distributed.world_size()})
                parent = run.info.run_id
        ranks_all = [n for n in models if distributed.is_main() or TRAINERS[n][0] == "cnn"]
        candidates = [c for n in ranks_all if (c := train_candidate(n, data, parent, args.quick)) is not None]
        if not distributed.is_main():
            return None
        report = summarise(data, candidates, parent)
        print(report.table.to_markdown(index=False, floatfmt=".3f"))
        summary = report.summary()
        print(json.dumps(summary, default=str))
        return summary
    finally:
        distributed.teardown()


if __name__ == "__main__":
    main()

"""How each family of candidate is fitted: a classical recipe on cached features, seed 002's scale ×
shape sequence model, or a CNN. Each returns a :class:`Fitted` for :mod:`pipelines.training.runs` to log.
torch is imported by the CNN's fit only: a classical candidate trains without it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit

from pipelines import evaluation, vision
from pipelines.features.featurizer import ImageFeaturizer
from pipelines.features.social import EARLY_VIEWS
from pipelines.features.social import NAMES as SOCIAL_NAMES
from pipelines.models import backends, classical, distributed, sequences
from pipelines.models.sequences import SEQUENCE_GROUPS
from pipelines.models.text import with_text
from pipelines.tasks import PRIMARY
from pipelines.training.data import TrainingData
from pipelines.training.fitted import Fitted


def _sklearn_config(data: TrainingData, featurizer: ImageFeaturizer, columns: list[str]) -> dict:
    return {"kind": "sklearn", "task": data.task,
            "featurizer": asdict(featurizer) | {"groups": list(featurizer.groups)}, "columns": columns}


def _importances(estimator, columns: list[str]) -> dict[str, pd.DataFrame]:
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not hasattr(final, "feature_importances_") or len(final.feature_importances_) != len(columns):
        return {}
    table = pd.DataFrame({"feature": columns, "importance": final.feature_importances_})
    return {"feature_importances": table.sort_values("importance", ascending=False)}


def fit_recipe(data: TrainingData, workdir: Path, quick: bool, params: dict | None, recipe: str) -> Fitted:
    """A recipe of :mod:`pipelines.models.classical` on its cached feature groups."""
    recipe = classical.RECIPES[recipe]
    s = data.settings.train
    featurizer = data.featurizer(recipe.groups)
    x, y = data.x("train", featurizer), data.y("train")
    chosen = recipe.defaults(s, quick) | (params or {})
    if "pca_components" in chosen:  # no more components than the smallest grouped training fold has rows
        groups = data.groups("train")
        rows = min(len(train) for train, _ in classical.grouped_folds(groups, s.cv_folds).split(x, y, groups))
        chosen["pca_components"] = max(1, min(chosen["pca_components"], rows))
    estimator = with_text(recipe.build(data.task, chosen, s), x, s.text_components, s.seed)
    metrics = {}
    if recipe.grid and not params:
        search = classical.grouped_search(estimator, recipe.grid(s), x, y, data.groups("train"), data.task,
                                          s.cv_folds)
        estimator = search.best_estimator_
        chosen |= {k.rsplit("__", 1)[-1]: v for k, v in search.best_params_.items()}
        metrics[f"cv_{PRIMARY[data.task]}"] = float(search.best_score_)
    else:
        estimator.fit(x, y)
    columns = list(x.columns)
    return Fitted(_sklearn_config(data, featurizer, columns),
                  {"estimator": backends.save_estimator(estimator, workdir / "estimator.skops")},
                  {**chosen, "features": "+".join(recipe.groups)}, metrics=metrics,
                  tables=_importances(estimator, columns))


def fit_sequences(data: TrainingData, workdir: Path, quick: bool, params: dict | None, method: str) -> Fitted:
    """Seed 002: shape prototypes + random forest for the shape, SVR for the scale."""
    s = data.settings.train
    columns = sequences.sequence_columns(data.manifest)
    if len(columns) < 2:
        raise ValueError(f"the sequence models need daily views views_d1..views_d30; snapshot "
                         f"{data.snapshot.id} has {columns or 'none'}")
    featurizer = data.featurizer(SEQUENCE_GROUPS)
    x = data.x("train", featurizer)
    chosen = {"method": method, "clusters": s.sequence_clusters, "bandwidth": s.sequence_bandwidth, "C": 1.0,
              "trees": 100 if quick else 300, "seed": s.seed, "text_components": s.text_components} | (params or {})
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


def fit_nowcast(data: TrainingData, workdir: Path, quick: bool, params: dict | None) -> Fitted:
    """Day-30 views from the image, the user and the first ``train.nowcast_days`` days of views; beside it,
    the Spearman ρ with day-30 views on validation and test for every k of 0 … 7 and for the image alone."""
    s = data.settings.train
    columns = sequences.sequence_columns(data.manifest)
    if len(columns) <= len(EARLY_VIEWS):
        raise ValueError(f"the nowcast needs daily views views_d1..views_d30; snapshot {data.snapshot.id} has "
                         f"{columns or 'none'}")
    featurizer = data.featurizer(SEQUENCE_GROUPS)

    splits = ("train", "val", "test")
    x = {split: pd.concat([data.x(split, featurizer), data.rows(split)[EARLY_VIEWS].astype(float)
                           .set_index(data.rows(split)["image_id"])], axis=1) for split in splits}
    seq = {split: data.rows(split)[columns].to_numpy(dtype=float) for split in splits}
    day30 = {split: np.log1p(sequences.scale_shape(seq[split])[0]) for split in splits}
    chosen = {"days": s.nowcast_days, "max_iter": 100 if quick else 300, "learning_rate": 0.05,
              "seed": s.seed, "text_components": s.text_components} | (params or {})
    train_x, train_seq = x["train"], seq["train"]
    image_only = [c for c in train_x.columns if c not in SOCIAL_NAMES and c not in EARLY_VIEWS]
    rows = []
    early = {0: "", 1: "+views d1"} | {k: f"+views d1..d{k}" for k in range(2, len(EARLY_VIEWS) + 1)}
    for label, days, kept in [("image", 0, image_only)] + [(f"image+social{early[k]}", k, list(train_x.columns))
                                                           for k in early]:
        model = sequences.NowcastRegressor(**(chosen | {"days": days})).fit(train_x[kept], train_seq)
        rows.append({"inputs": label, "days": days, **{
            f"{split}_spearman": float(spearmanr(day30[split], model.predict(x[split][kept])).statistic)
            for split in ("val", "test")}})
    by_day = pd.DataFrame(rows)
    # the served model learns the task's own target: the score task's score (views per day since posting),
    # not day-30 views, so its scores are on the scale the task reports and monitors
    model = sequences.NowcastRegressor(**chosen).fit(
        train_x, train_seq, labels=data.y("train") if data.task == "binary" else None,
        target=data.y("train") if data.task == "score" else None)
    metrics = {f"nowcast_spearman_{'image' if r.inputs == 'image' else f'd{r.days}'}": r.test_spearman
               for r in by_day.itertuples()}
    return Fitted(_sklearn_config(data, featurizer, list(train_x.columns)),
                  {"estimator": backends.save_estimator(model, workdir / "estimator.skops")},
                  chosen, metrics=metrics, tables={"nowcast_by_day": by_day})


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


def early_stopping_split(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """Positions in the training split to fit on and to stop on: ``train.early_stopping_share`` of its
    groups (users) held out. A CNN that picked its epoch on the validation split would bring a validation
    score maximised over its epochs to a comparison that the other candidates enter with an unbiased one.
    Where that part would hold fewer than ``train.early_stopping_min_rows`` rows (or there are fewer than two
    groups) it would choose the epoch by noise: the fit then uses every row and stops on its own rows."""
    s = data.settings.train
    groups = data.groups("train")
    everything = np.arange(len(groups))
    if len(np.unique(groups)) < 2:
        return everything, everything
    fit, stop = next(GroupShuffleSplit(1, test_size=s.early_stopping_share, random_state=s.seed)
                     .split(everything, groups=groups))
    return (fit, stop) if len(stop) >= s.early_stopping_min_rows else (everything, everything)


def fit_network(data: TrainingData, workdir: Path, quick: bool, params: dict | None, backbone: str | None,
                head: str | None) -> Fitted:
    """A torchvision backbone (the configured one unless named) trained end to end with the given head, its
    epoch chosen on a held-out part of the training split (:func:`early_stopping_split`)."""
    import torch

    from pipelines.models import cnn

    s = data.settings.train
    backbone = backbone or s.backbone
    head = head or ("bce" if data.task == "binary" else "huber")
    pretrained = backbone != "small_cnn"
    torch.manual_seed(s.seed)  # the new head's initial weights: a run is reproducible, every rank starts alike
    try:
        network = cnn.build_network(backbone, pretrained=pretrained)
    except vision.WeightsUnavailable as exc:
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
                        ranking_margin=s.ranking_margin, crop=s.crop)
    fit, stop = early_stopping_split(data)
    watched = (f"held-out ({len(stop)} training rows)" if len(stop) < len(fit) else
               f"fit (too few rows to hold {s.early_stopping_min_rows} out)")
    truth = data.y("train").astype(float)
    truth_fit, truth_stop = truth[fit], truth[stop]
    mean, std = 0.0, 1.0
    if head == "huber":
        mean, std = float(truth_fit.mean()), float(truth_fit.std() or 1.0)
        t_fit, t_stop = (truth_fit - mean) / std, (truth_stop - mean) / std
    elif head == "ordinal":  # seed 001: equal-frequency bins, Euclidean loss on the bin index
        engagement = data.engagement("train")
        edges = np.quantile(engagement[fit], np.linspace(0, 1, s.ordinal_bins + 1)[1:-1])
        t_fit, t_stop = _deciles(engagement[fit], edges), _deciles(engagement[stop], edges)
    elif head == "ranking":
        groups = data.groups("train")
        codes = {g: i for i, g in enumerate(np.unique(groups))}
        target = np.column_stack([data.engagement("train"), [codes[g] for g in groups]])
        t_fit, t_stop = target[fit], target[stop]
    else:
        t_fit, t_stop = truth_fit, truth_stop

    def stop_metric(_, out):  # always the task's own metric against the true target
        return evaluation.task_metrics(data.task, truth_stop, out * std + mean)[PRIMARY[data.task]]

    def log_epoch(epoch: int, row: dict) -> None:
        if data.log_epochs:  # on the console and, under a flow (log_prints), in the Prefect run's logs
            mlflow.log_metrics(row, step=epoch)
            print(f"{backbone} epoch {epoch}/{cfg.epochs}: train loss {row['train_loss']:.4f}, {watched} loss "
                  f"{row['held_out_loss']:.4f}, {watched} {PRIMARY[data.task]} {row['held_out_metric']:.3f}",
                  flush=True)

    load_px = vision.load_px(px, s.crop)
    pixels = data.pixels("train", load_px)
    result = cnn.fit(network, (pixels[fit], t_fit), (pixels[stop], t_stop), cfg, stop_metric, on_epoch=log_epoch)
    weights = workdir / "weights.pt"
    torch.save(result.model.state_dict(), weights)
    config = {"kind": "torch", "task": data.task, "backbone": backbone, "image_px": px, "crop": s.crop,
              "target_mean": mean, "target_std": std, "flip_average": s.flip_average}
    if head in ("ordinal", "ranking"):
        raw = cnn.predict(result.model, pixels[stop], px, s.crop, flip_average=s.flip_average)
        config["calibration"] = _calibration(data.task, raw, truth_stop)
    fit_params = {k: v for k, v in asdict(cfg).items() if k != "task"}
    fit_params |= {"backbone": backbone, "pretrained": pretrained, "best_epoch": result.best_epoch,
                   "early_stopping_rows": len(stop),
                   "world_size": distributed.world_size()}
    return Fitted(config, {"weights": str(weights)}, fit_params, result.history)

"""Metrics, baselines and the plots a reviewer opens in the MLflow UI."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, ImageOps
from scipy.stats import rankdata, spearmanr
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from pipelines.data.images import to_jpeg


def trimmed_rmse(y: np.ndarray, pred: np.ndarray, trim: float = 0.25) -> float:
    """RMSE over the errors between the ``trim`` and ``1 - trim`` quantiles (seed 002)."""
    err = np.sort((np.asarray(pred) - np.asarray(y)) ** 2)
    lo, hi = int(len(err) * trim), int(np.ceil(len(err) * (1 - trim)))
    return float(np.sqrt(err[lo:hi].mean())) if hi > lo else float("nan")


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
    pred = (score >= threshold).astype(int)
    single_class = len(np.unique(y)) < 2
    return {
        "roc_auc": float("nan") if single_class else float(skm.roc_auc_score(y, score)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, pred)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "brier": float(skm.brier_score_loss(y, np.clip(score, 0, 1))),
        # seed 000: how often a "popular" prediction is right, next to the base rate
        "relevant_precision": float(skm.precision_score(y, pred, zero_division=0)),
        "base_rate": float(y.mean()),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    rho = spearmanr(y, pred).statistic if np.std(pred) > 0 else float("nan")
    return {
        "spearman": float(rho),
        "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
        "trimmed_rmse": trimmed_rmse(y, pred),
        "median_ae": float(np.median(np.abs(pred - y))),
        "median_pct_diff": median_percentage_difference(y, pred),
    }


def median_percentage_difference(y: np.ndarray, pred: np.ndarray) -> float:
    """Seed 004's |predicted − actual| / actual × 100, on the counts that a log(count + 1) score stands
    for (likes, or views per day), as its median over the items with a non-zero count."""
    actual, predicted = np.expm1(np.asarray(y, dtype=float)), np.expm1(np.asarray(pred, dtype=float))
    counted = actual > 0
    if not counted.any():
        return float("nan")
    return float(np.median(np.abs(predicted[counted] - actual[counted]) / actual[counted]) * 100)


def pairwise_accuracy(engagement: np.ndarray, score: np.ndarray, groups: np.ndarray) -> float:
    """Share of same-group pairs with different engagement that the score orders correctly.

    Within one user's photos (or one restaurant category) the social context is shared, so this
    measures what the image itself adds; ties in the score count half.
    """
    engagement, score, groups = np.asarray(engagement, float), np.asarray(score, float), np.asarray(groups)
    right, total = 0.0, 0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        de = np.sign(engagement[idx, None] - engagement[None, idx])
        ds = np.sign(score[idx, None] - score[None, idx])
        pairs = np.triu(de != 0, k=1)
        right += float(((de == ds) & pairs).sum() + 0.5 * ((ds == 0) & pairs).sum())
        total += int(pairs.sum())
    return right / total if total else float("nan")


def task_metrics(task: str, y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    return binary_metrics(y, score) if task == "binary" else regression_metrics(y, score)


def bootstrap_se(y: np.ndarray, score: np.ndarray, primary: str, resamples: int = 200, seed: int = 0) -> float:
    """The standard error of the ``primary`` metric, from resampling the rows: how far apart two
    candidates' validation numbers must be before the difference means anything.

    The resamples are ranked all at once (ROC AUC as the Mann-Whitney statistic, Spearman as the
    correlation of ranks, ties averaged as scikit-learn and SciPy do); a binary resample with one class
    has no AUC and is left out."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    if len(y) < 3:
        return float("nan")
    resampled = {"roc_auc": _resampled_roc_auc, "spearman": _resampled_spearman}[primary]
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // len(y))  # resamples ranked together: about 2 M ranks (16 MB) at a time
    values = []
    for start in range(0, resamples, block):
        rows = rng.integers(0, len(y), (min(block, resamples - start), len(y)))
        values.append(resampled(y[rows], score[rows]))
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 2 else float("nan")


def spearman_gap_interval(y: np.ndarray, reference: np.ndarray, score: np.ndarray, groups: np.ndarray,
                          level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile interval of ``Spearman(reference) - Spearman(score)`` against ``y`` on the same rows:
    how far one test set's gap between two rankings (a model and the oracle) can move by which rows it
    happened to hold. Whole ``groups`` are resampled (a user's posts share their reach), both rankings on
    the same draw."""
    y, reference, score = (np.asarray(v, dtype=float) for v in (y, reference, score))
    members = list(pd.Series(np.arange(len(y))).groupby(np.asarray(groups)).indices.values())
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        gaps.append(spearmanr(y[rows], reference[rows]).statistic - spearmanr(y[rows], score[rows]).statistic)
    low, high = np.nanpercentile(gaps, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _resampled_roc_auc(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each row's ROC AUC (rows: resamples); NaN where a row holds one class."""
    positives = (y == 1).sum(axis=1)
    negatives = y.shape[1] - positives
    ranks = rankdata(score, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * (y == 1)).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def _resampled_spearman(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each row's Spearman correlation (rows: resamples); NaN where a row's labels or scores are constant."""
    ry, rs = rankdata(y, axis=1), rankdata(score, axis=1)
    ry -= ry.mean(axis=1, keepdims=True)
    rs -= rs.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ry * rs).sum(axis=1) / np.sqrt((ry**2).sum(axis=1) * (rs**2).sum(axis=1))


def stability(model, images: list, base: np.ndarray, social: pd.DataFrame | None = None) -> dict[str, float]:
    """How far the score moves under a horizontal flip and a JPEG re-compression, in units of the
    scores' spread: what a user sees when the same photo is uploaded mirrored or re-saved."""
    flipped = model.predict_images([ImageOps.mirror(img) for img in images], social)["score"].to_numpy()
    recompressed = [Image.open(io.BytesIO(to_jpeg(img, quality=70))).convert("RGB") for img in images]
    jpeg = model.predict_images(recompressed, social)["score"].to_numpy()
    spread = max(float(np.std(base)), 1e-9)
    return {"flip_shift": float(np.mean(np.abs(flipped - base))) / spread,
            "jpeg_shift": float(np.mean(np.abs(jpeg - base))) / spread}


#: The gate's stability checks: (check, measure of :func:`stability`, the promotion setting that bounds it).
STABILITY_CHECKS = (("flip_stability", "flip_shift", "flip_tolerance"),
                    ("jpeg_stability", "jpeg_shift", "jpeg_tolerance"))


def stability_verdicts(shifts: dict[str, float], promotion) -> list[tuple[str, str, float, float, bool]]:
    """Each stability check as ``(check, measure, value, limit, passed)``: one rule, which selection applies to
    the validation split's measures at training and the gate to the same split's measures at promotion."""
    out = []
    for check, measure, setting in STABILITY_CHECKS:
        value, limit = float(shifts.get(measure, np.inf)), float(getattr(promotion, setting))
        out.append((check, measure, value, limit, bool(value <= limit)))
    return out


def baseline(task: str, y_train: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """The majority class (binary) or the training mean (score), scored like any candidate."""
    if task == "binary":
        majority = float(np.mean(y_train) >= 0.5)
        return binary_metrics(y_test, np.full(len(y_test), majority))
    return regression_metrics(y_test, np.full(len(y_test), float(np.mean(y_train))))


def binary_plots(y: np.ndarray, score: np.ndarray, out: Path) -> list[Path]:
    """Confusion matrix, ROC, precision-recall and calibration plots as PNG files."""
    out.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).astype(int)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    skm.ConfusionMatrixDisplay.from_predictions(y, (score >= 0.5).astype(int), ax=axes[0],
                                                display_labels=["unpopular", "popular"], colorbar=False)
    axes[0].set_title("Confusion matrix")
    skm.RocCurveDisplay.from_predictions(y, score, ax=axes[1], plot_chance_level=True)
    axes[1].set_title("ROC")
    skm.PrecisionRecallDisplay.from_predictions(y, score, ax=axes[2], plot_chance_level=True)
    axes[2].set_title("Precision-recall")
    frac, mean = calibration_curve(y, np.clip(score, 0, 1), n_bins=10, strategy="quantile")
    axes[3].plot(mean, frac, "o-", label="model")
    axes[3].plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    axes[3].set(title="Calibration", xlabel="mean predicted", ylabel="fraction popular")
    axes[3].legend()
    path = out / "evaluation.png"
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


def regression_plots(y: np.ndarray, pred: np.ndarray, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y, pred, s=6, alpha=0.5)
    lo, hi = float(np.min(y)), float(np.max(y))
    ax.plot([lo, hi], [lo, hi], "--", color="grey")
    ax.set(title="Predicted vs true score", xlabel="true", ylabel="predicted")
    path = out / "evaluation.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return [path]


def loss_curves(history: list[dict], out: Path) -> Path:
    """The training loss and the held-out loss (early stopping's rows of the training split) per epoch
    (seed 004)."""
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(history) + 1)
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["held_out_loss"] for h in history], "o-", label="held out for early stopping")
    ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax.legend()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(images: list, scores: np.ndarray, title: str, out: Path, cell: int = 150) -> Path:
    """A contact sheet of images with their scores: the top and bottom 25 show what the model learned
    (seed 003). Drawn with Pillow, five to a row, each image fitted into a ``cell``-pixel square."""
    out.mkdir(parents=True, exist_ok=True)
    cols, caption, header = 5, 20, 34
    rows = max(1, int(np.ceil(len(images) / cols)))
    sheet = Image.new("RGB", (cols * cell, header + rows * (cell + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 6), title, fill="black", font=ImageFont.load_default(20))
    font = ImageFont.load_default(13)
    for i, (img, s) in enumerate(zip(images, scores, strict=False)):
        x, y = (i % cols) * cell, header + (i // cols) * (cell + caption)
        tile = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
        tile = ImageOps.contain(tile.convert("RGB"), (cell - 6, cell - 6))
        draw.text((x + cell // 2, y + caption // 2), f"{s:.2f}", fill="black", font=font, anchor="mm")
        sheet.paste(tile, (x + (cell - tile.width) // 2, y + caption))
    path = out / f"{title.lower().replace(' ', '_')}.png"
    sheet.save(path)
    return path

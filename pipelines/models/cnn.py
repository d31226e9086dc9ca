"""CNNs: MobileNetV2 transfer learning from ImageNet (seeds 001, 003) and a small CNN (seed 004)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision
from torch import nn

from pipelines.models import distributed
from pipelines.vision import device, eval_transform, pretrained_backbone, train_transform


class SmallCNN(nn.Module):
    """Seed 004's network: two conv blocks, a dense layer and dropout, for 64×64 inputs."""

    def __init__(self, outputs: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(8),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(128, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _replace_head(model: nn.Module, outputs: int) -> nn.Module:
    if hasattr(model, "classifier") and isinstance(model.classifier, nn.Sequential):
        last = model.classifier[-1]
        model.classifier[-1] = nn.Linear(last.in_features, outputs)
    elif hasattr(model, "fc"):
        model.fc = nn.Linear(model.fc.in_features, outputs)
    elif hasattr(model, "heads"):
        model.heads[-1] = nn.Linear(model.heads[-1].in_features, outputs)
    else:
        raise ValueError(f"do not know where the head of {type(model).__name__} is")
    return model


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    for attr in ("classifier", "fc", "heads"):
        if hasattr(model, attr):
            return list(getattr(model, attr).parameters())
    return []


def build_network(backbone: str, pretrained: bool, outputs: int = 1) -> nn.Module:
    if backbone == "small_cnn":
        return SmallCNN(outputs)
    model = pretrained_backbone(backbone) if pretrained else torchvision.models.get_model(backbone)
    return _replace_head(model, outputs)


class ArrayDataset(torch.utils.data.Dataset):
    """Images and targets in memory; each sample's augmentation is drawn from (seed, epoch, index), so
    that it does not depend on which process or worker loads it (DDP matches one process)."""

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, transform: Callable, seed: int = 0):
        self.pixels = torch.as_tensor(pixels).permute(0, 3, 1, 2)
        self.targets = torch.as_tensor(targets, dtype=torch.float32)
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + self.epoch * 100_003 + i) % 2**63)
            return self.transform(self.pixels[i]), self.targets[i]


class GroupBatches(torch.utils.data.Sampler):
    """Batches of whole groups (one user's photos), so that ranking pairs exist inside every batch.

    Under DDP each rank takes every ``world``-th batch of the same seeded order; all ranks get the
    same number of batches, as DDP requires.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.groups, self.batch_size, self.seed, self.rank, self.world = groups, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = np.concatenate([rng.permutation(np.flatnonzero(self.groups == g))
                                for g in rng.permutation(np.unique(self.groups))])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        usable = len(batches) // self.world * self.world or len(batches)
        return batches[:usable][self.rank :: self.world]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def ranking_loss(out: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Margin ranking loss over every pair of the batch from one group with different engagement.

    ``y`` holds ``(engagement, group code)``; comparing photos of one user cancels the social context,
    so the network learns what the image itself adds.
    """
    target, group = y[:, 0], y[:, 1]
    same = (group[:, None] == group[None, :]) & (target[:, None] != target[None, :])
    i, j = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
    if len(i) == 0:
        return out.sum() * 0.0  # keeps the graph (and DDP's gradient hooks) alive
    return nn.functional.margin_ranking_loss(out[i], out[j], torch.sign(target[i] - target[j]), margin=margin)


HEADS = ("bce", "huber", "ordinal", "ranking")


def loss_function(head: str, targets: np.ndarray, dev: torch.device, margin: float = 1.0) -> Callable:
    """The loss of each head: class-weighted BCE (the majority class cannot win), Huber on the standardised
    score, seed 001's Euclidean loss on decile indices, or the within-group ranking loss."""
    if head == "bce":
        positives = float(np.mean(targets))
        pos_weight = torch.tensor((1 - positives) / max(positives, 1e-6), device=dev)
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    if head == "huber":
        return nn.HuberLoss()
    if head == "ordinal":
        return nn.MSELoss()
    if head == "ranking":
        return lambda out, y: ranking_loss(out, y, margin)
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


@dataclass
class FitConfig:
    image_px: int
    epochs: int
    batch_size: int
    lr: float
    head_lr_multiplier: float
    step_size: int
    patience: int
    seed: int
    task: str = "binary"
    head: str = "bce"
    ranking_margin: float = 1.0
    crop: str = "resized"  # see vision.train_transform


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    val_metric: Callable[[np.ndarray, np.ndarray], float],
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train with a 10× head learning rate, step decay ×0.1, early stopping on ``val_metric`` over ``val``
    (rows the caller held out of the fit: training keeps them apart from the validation split).

    Under ``torchrun`` the model is wrapped in DistributedDataParallel and every rank takes
    ``batch_size / N`` of each global batch, so N processes follow one process's optimisation;
    ``on_epoch`` (MLflow logging) runs on rank 0 only, with the training loss over every rank's samples.
    """
    torch.manual_seed(cfg.seed)
    dev = device()
    model = model.to(dev)
    head = head_parameters(model)
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW([
        {"params": body, "lr": cfg.lr},
        {"params": head, "lr": cfg.lr * cfg.head_lr_multiplier},
    ], weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=0.1)
    loss_fn = loss_function(cfg.head, train[1], dev, cfg.ranking_margin)
    rank, world = distributed.rank(), distributed.world_size()
    per_rank = max(1, cfg.batch_size // world)
    dataset = ArrayDataset(*train, train_transform(cfg.image_px, cfg.crop), seed=cfg.seed)
    if cfg.head == "ranking":
        sampler = GroupBatches(np.asarray(train[1])[:, 1], cfg.batch_size, cfg.seed, rank, world)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
    else:  # one seeded order for any N: each global batch is split between the ranks
        sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed)
        loader = torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler)
    trained = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    scaler = torch.amp.GradScaler(enabled=dev.type == "cuda")
    best, best_state, best_epoch, stale, history = -np.inf, None, 0, 0, []
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        dataset.epoch = epoch
        trained.train()
        total, count = 0.0, 0
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, enabled=dev.type == "cuda"):
                loss = loss_fn(trained(x).squeeze(1).float(), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total, count = total + loss.item() * len(y), count + len(y)
        scheduler.step()
        val_out = predict(model, val[0], cfg.image_px, cfg.crop)
        with torch.no_grad():
            val_loss = float(loss_fn(torch.as_tensor(val_out, device=dev),
                                     torch.as_tensor(val[1], dtype=torch.float32, device=dev)).item())
        metric = distributed.broadcast_float(float(val_metric(val[1], val_out)))
        total, count = distributed.all_sum([total, count])
        row = {"train_loss": total / max(count, 1), "held_out_loss": val_loss, "held_out_metric": metric}
        history.append(row)
        if on_epoch and distributed.is_main():
            on_epoch(epoch, row)
        monitored = metric if np.isfinite(metric) else -val_loss  # e.g. a held-out part with one class
        if monitored > best or best_state is None:
            best, best_state, best_epoch, stale = monitored, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return FitResult(model=model.eval(), history=history, best_epoch=best_epoch)


@torch.no_grad()
def predict(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], pixels: np.ndarray, px: int,
            crop: str = "resized", batch_size: int = 64, flip_average: bool = False) -> np.ndarray:
    """Raw outputs (logits or standardised scores) for an ``N×H×W×3`` uint8 batch; with ``flip_average`` the
    mean of the image's and its mirror's (test-time augmentation, as the flip-trained network saw both), so
    a photo uploaded mirrored scores the same. ``model`` is the torch network or its exported graph
    (:class:`pipelines.runtime.OnnxNetwork`)."""
    model.eval()
    dev = next(model.parameters()).device if isinstance(model, nn.Module) else torch.device("cpu")  # or ONNX Runtime
    transform = eval_transform(px, crop)
    outputs = []
    for start in range(0, len(pixels), batch_size):
        x = transform(torch.as_tensor(pixels[start : start + batch_size]).permute(0, 3, 1, 2)).to(dev)
        with torch.autocast(dev.type, enabled=dev.type == "cuda"):
            if flip_average:
                both = model(torch.cat([x, x.flip(-1)])).squeeze(1).float()
                outputs.append(((both[: len(x)] + both[len(x):]) / 2).cpu().numpy())
            else:
                outputs.append(model(x).squeeze(1).float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.empty(0)

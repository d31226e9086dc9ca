"""The one registry of candidates: for each name, its family, what a prediction needs, how it is
fitted and how ``--tune`` searches it.

Trainers are named, not imported, so that listing or checking candidates (a CLI usage error) needs
neither torch nor a fitted model: :meth:`CandidateSpec.fit` imports :mod:`pipelines.training.trainers`
on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from pipelines.models.classical import RECIPES
from pipelines.models.sequences import SEQUENCE_GROUPS


@dataclass(frozen=True)
class CandidateSpec:
    family: str  # classical, sequence or cnn
    trainer: str  # a function of pipelines.training.trainers: (data, workdir, quick, params, **options) -> Fitted
    options: dict = field(default_factory=dict)
    inputs: str = "image"  # "image", "social" or "image+social": what a prediction needs
    space: Callable[[object], dict] | None = None  # Optuna search space (``--tune``)
    doc: str = ""

    def fit(self, data, workdir: Path, quick: bool, params: dict | None = None):
        trainers = import_module("pipelines.training.trainers")
        return getattr(trainers, self.trainer)(data, workdir, quick, params, **self.options)


def _cnn_space(trial) -> dict:
    return {"lr": trial.suggest_float("lr", 1e-5, 3e-3, log=True),
            "head_lr_multiplier": trial.suggest_float("head_lr_multiplier", 5.0, 20.0)}


def _network(backbone: str | None, head: str | None, doc: str) -> CandidateSpec:
    return CandidateSpec("cnn", "fit_network", {"backbone": backbone, "head": head}, space=_cnn_space, doc=doc)


CANDIDATES: dict[str, CandidateSpec] = {
    **{name: CandidateSpec("classical", "fit_recipe", {"recipe": name}, recipe.inputs, recipe.space,
                           f"The {name} recipe of pipelines.models.classical.")
       for name, recipe in RECIPES.items()},
    "seq-kmeans": CandidateSpec("sequence", "fit_sequences", {"method": "kmeans"}, "image+social",
                                doc="Seed 002: k-means shape prototypes, a forest for the shape, SVR for the scale."),
    "seq-meanshift": CandidateSpec("sequence", "fit_sequences", {"method": "meanshift"}, "image+social",
                                   doc="Seed 002 with mean-shift prototypes."),
    "nowcast": CandidateSpec("sequence", "fit_nowcast", {}, "image+social+early views",
                             doc="Day-30 views from the image, the user and the first days' views (seed 002)."),
    "cnn": _network(None, None, "The configured backbone fine-tuned from ImageNet (seeds 001, 003)."),
    "cnn-ordinal": _network(None, "ordinal", "Seed 001's ordinal deciles with a Euclidean loss."),
    "cnn-ranking": _network(None, "ranking", "Margin ranking loss on pairs from one group."),
    "small-cnn": _network("small_cnn", None, "Seed 004's small CNN from scratch on 64×64 inputs."),
}


def image_feature_groups(models: list[str]) -> tuple[str, ...]:
    """The image feature groups these candidates read from the cache (CNNs read pixels). Social columns
    are left out: missing social context is imputed by the models, not a broken feature."""
    groups = []
    for name in models:
        spec = CANDIDATES[name]
        if spec.family == "classical":
            groups += RECIPES[spec.options["recipe"]].groups
        elif spec.family == "sequence":
            groups += SEQUENCE_GROUPS
    return tuple(g for g in dict.fromkeys(groups) if g != "social")


class UnknownCandidate(ValueError):
    """A ``--models`` name that no candidate has."""


def check_models(models: list[str]) -> list[str]:
    unknown = sorted(set(models) - set(CANDIDATES))
    if unknown:
        raise UnknownCandidate(f"unknown models {unknown}; choose from {sorted(CANDIDATES)}")
    return models

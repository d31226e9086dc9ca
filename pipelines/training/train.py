"""Training's entry points: :func:`train` for a notebook or a flow, :func:`main` for the command line.

Run as a module it trains without Prefect; under ``torchrun --nproc_per_node N`` the CNN candidates
train data-parallel and rank 0 alone logs to MLflow::

    torchrun --nproc_per_node 2 -m pipelines.training --models cnn
"""

from __future__ import annotations

import argparse
import json

import mlflow

from pipelines import tracking
from pipelines.data.snapshots import Snapshot
from pipelines.models import distributed
from pipelines.settings import Settings, load_settings
from pipelines.tasks import TASKS
from pipelines.training.candidates import CANDIDATES, check_models
from pipelines.training.defaults import default_models
from pipelines.training.data import TrainingData
from pipelines.training.report import TrainReport, summarise
from pipelines.training.runs import train_candidate


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


def train(snapshot: Snapshot, task: str, models: list[str], settings: Settings, parent_run_id: str,
          quick: bool = False) -> TrainReport:
    """Train ``models`` on ``snapshot`` under an open parent run (the notebook entry point)."""
    check_models(models)
    data = TrainingData(snapshot, task, settings)
    return summarise(data, [train_candidate(name, data, parent_run_id, quick) for name in models], parent_run_id)


def main(argv: list[str] | None = None) -> dict | None:
    """Train without Prefect; under ``torchrun`` CNNs train on every rank and rank 0 logs and reports."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.training", description=main.__doc__)
    parser.add_argument("snapshot", nargs="?", help="snapshot id, name or path (default: the latest)")
    parser.add_argument("--task", default="binary", choices=TASKS)
    parser.add_argument("--models", default=None, help="comma-separated candidates (train.models, else the "
                                                       "data's own: see pipelines.training.candidates)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--experiment", default="popularity")
    args = parser.parse_args(argv)
    settings = load_settings()
    distributed.setup()
    try:
        snapshot = Snapshot.open(settings.datasets_dir, args.snapshot)
        models = check_models(args.models.split(",") if args.models else
                              settings.train.models or default_models(snapshot.manifest))
        data = TrainingData(snapshot, args.task, settings)
        parent = None
        if distributed.is_main():
            mlflow.set_tracking_uri(settings.tracking_uri)
            with tracking.start_run(experiment_id=tracking.experiment(settings, args.experiment),
                                  run_name=f"train-{args.task}") as run:
                mlflow.set_tags({"world_size": distributed.world_size()})
                parent = run.info.run_id
        ranks_all = [n for n in models if distributed.is_main() or CANDIDATES[n].family == "cnn"]
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

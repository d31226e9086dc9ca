"""The oracle beside every demo result is the generator's latent for that very target: for each label
scheme and task it ranks the target far better than the strongest observable alone (log followers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines import evaluation
from pipelines.data import labels
from pipelines.data.collect import collect
from pipelines.data.sources import parse_spec
from pipelines.settings import Settings
from pipelines.tasks import PRIMARY, TARGET
from pipelines.training.report import LATENT, oracle_latent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("oracle") / "home")
    snapshot = collect(parse_spec("demo:400", settings), settings)
    raw = snapshot.manifest.drop(columns=["label", "score", "likes_per_follower"], errors="ignore")
    return raw, pd.read_parquet(snapshot.path / "oracle.parquet")


@pytest.mark.parametrize(("scheme", "task"), sorted(LATENT))
def test_the_oracle_is_the_latent_of_each_target(demo, scheme, task):
    raw, oracle = demo
    labelled, _ = labels.apply(scheme, raw)
    y = labelled[TARGET[task]].to_numpy()
    latent = oracle_latent(oracle, labelled, scheme, task).loc[labelled["image_id"]].to_numpy()
    best = evaluation.task_metrics(task, y, latent)[PRIMARY[task]]
    followers = evaluation.task_metrics(task, y, np.log(labelled["followers"].astype(float)).to_numpy())[PRIMARY[task]]
    assert best >= 0.9 and best > followers + 0.05, (best, followers)


def test_a_target_the_generator_does_not_model_has_no_oracle(demo):
    raw, oracle = demo
    assert oracle_latent(oracle, raw, "given", "binary") is None
    assert oracle_latent(oracle, raw, "favorited", "score") is None

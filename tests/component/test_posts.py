"""Seed 002's own data in the domain core: posts with text tags, user columns with gaps and 30-day views
(bench/posts.py, real photographs) keep every row, the default candidates follow the columns, the words
reach the model, and the regression heads learn the score task."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from bench.posts import oracle_scores, write_posts
from pipelines import tracking
from pipelines.data.collect import collect
from pipelines.data.sources import parse_spec
from pipelines.training.data import TrainingData
from pipelines.training.defaults import IMAGE_MODELS, SEQUENCE_MODELS, SOCIAL_MODELS, default_models
from pipelines.training.runs import train_candidate
from tests.component.tiny import check_pyfunc, tiny_settings
from validation import validate_snapshot


def _posts(root, home, **kwargs) -> tuple[TrainingData, str, pd.DataFrame]:
    settings = tiny_settings(home)
    manifest = write_posts(root / "posts", side=96, **kwargs)
    snapshot = collect(parse_spec(f"manifest:{manifest}", settings), settings, progress=False)
    report = validate_snapshot(snapshot, settings, mode="ephemeral")
    assert report.success, report.message
    mlflow.set_tracking_uri(settings.tracking_uri)
    with mlflow.start_run(experiment_id=tracking.experiment(settings, "tests")) as run:
        parent = run.info.run_id
    return TrainingData(snapshot, "score", settings), parent, pd.read_parquet(manifest.parent / "truth.parquet")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One home (and MLflow store) for the module's post sets: each test finds its parent run there."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def posts(tmp_path_factory, home):
    return _posts(tmp_path_factory.mktemp("posts"), home, n=240, users=60, seed=5)


@pytest.fixture(scope="module")
def photos_only(tmp_path_factory, home):
    """Posts without their social columns whose views follow what the photos show, and nothing else."""
    return _posts(tmp_path_factory.mktemp("photos"), home, n=240, users=60, seed=6, social=False, reach_weight=0.0)


def test_every_post_is_kept_and_the_default_candidates_follow_the_columns(posts):
    data, _, truth = posts
    assert len(data.snapshot.manifest) == len(truth) == 240 and data.snapshot.lost_rows == {}
    assert data.snapshot.manifest["user_mean_views"].isna().any()  # kept with its gaps, imputed by the models
    assert default_models(data.snapshot.manifest) == [*IMAGE_MODELS, *SOCIAL_MODELS, *SEQUENCE_MODELS]
    image_only = data.snapshot.manifest[["post_id", "image_path", "posted_at", "views_d1", "views_d30"]]
    assert default_models(image_only) == list(IMAGE_MODELS)


def test_the_words_reach_the_model_and_move_its_scores(posts):
    data, parent, _ = posts
    candidate = train_candidate("social-gb", data, parent, quick=True)
    check_pyfunc(candidate, data)
    model = mlflow.pyfunc.load_model(candidate.model_uri).unwrap_python_model()
    assert "text" in model.backend.columns
    images, social = data.split_images("val"), data.social("val")
    with_words = model.predict_images(images, social)["score"].to_numpy()
    without = model.predict_images(images, social.assign(tags=None, title=None))["score"].to_numpy()
    assert not np.allclose(with_words, without)  # the tags (what the photo shows, "explore") move the score
    assert candidate.validation["spearman"] > 0.3  # the users' reach: most of what decides views


def test_regression_heads_learn_the_score_from_the_photos(photos_only):
    """Seed 001's CNN regression (Huber head) and seed 004's small CNN on posts whose views follow what the
    photos show: each learns a ranking that agrees with the photos' appeal on the test split."""
    data, parent, truth = photos_only
    test = data.rows("test")
    appeal = oracle_scores(truth, test, content_only=True)
    data.settings.train.quick_epochs = 3  # the linear test on these posts reads no epochs
    for name, floor in (("cnn", 0.4), ("small-cnn", 0.15)):
        candidate = train_candidate(name, data, parent, quick=True)
        assert candidate.params["head"] == "huber"
        losses = [m.value for m in mlflow.MlflowClient().get_metric_history(candidate.run_id, "train_loss")]
        assert len(losses) == 3 and losses[-1] < losses[0]
        model = mlflow.pyfunc.load_model(candidate.model_uri).unwrap_python_model()
        scores = model.predict_images(data.split_images("test"))["score"].to_numpy()
        assert spearmanr(scores, appeal).statistic > floor, name


def test_the_topics_fusion_learns_the_reach_and_the_appeal(posts):
    """Issue 25's image + social default: the users' reach (mean views, or their other numbers where those
    are missing), the words, and what the photo shows, in one linear model, close to the oracle."""
    data, parent, truth = posts
    candidate = train_candidate("social-topics-linear", data, parent, quick=True)
    check_pyfunc(candidate, data)
    test = data.rows("test")
    oracle = spearmanr(oracle_scores(truth, test), test["score"]).statistic
    assert candidate.metrics["spearman"] > oracle - 0.1, (candidate.metrics["spearman"], oracle)


def test_the_image_default_learns_what_the_photos_show(photos_only):
    """The image-only default (a linear model on the embedding averaged with one on its visual topics)
    ranks posts whose views follow their photos' appeal as the appeal does."""
    data, parent, truth = photos_only
    candidate = train_candidate("emb-topics-linear", data, parent, quick=True)
    model = mlflow.pyfunc.load_model(candidate.model_uri).unwrap_python_model()
    test = data.rows("test")
    scores = model.predict_images(data.split_images("test"))["score"].to_numpy()
    assert spearmanr(scores, oracle_scores(truth, test, content_only=True)).statistic > 0.75

"""A tiny demo snapshot and an MLflow parent run shared by the model and training tests."""

from __future__ import annotations

import mlflow
import pandas as pd
from PIL import Image

from pipelines import tracking
from pipelines.data.collect import collect
from pipelines.data.images import to_jpeg
from pipelines.data.sources import parse_spec
from pipelines.settings import Settings
from pipelines.training.data import TrainingData
from pipelines.training.runs import Candidate


def tiny_settings(home) -> Settings:
    settings = Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    t = settings.train
    t.cv_folds, t.sequence_clusters, t.forest_trees, t.epochs, t.quick_epochs, t.image_px = 3, 5, 50, 1, 1, 64
    t.svm_c_grid = [1e-2, 1.0]
    settings.features.embed_px = 64
    return settings


def tiny_data(home, task: str = "binary", images: int = 100, **kwargs) -> tuple[TrainingData, str]:
    settings = tiny_settings(home)
    snapshot = collect(parse_spec(f"demo:{images}", settings), settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    with mlflow.start_run(experiment_id=tracking.experiment(settings, "tests")) as run:
        parent = run.info.run_id
    return TrainingData(snapshot, task, settings, **kwargs), parent


def check_pyfunc(candidate: Candidate, data: TrainingData) -> pd.DataFrame:
    """The logged model loads as a generic pyfunc and answers the one interface on image bytes."""
    model = mlflow.pyfunc.load_model(candidate.model_uri)
    images: list[Image.Image] = data.split_images("test")[:3]
    frame = pd.DataFrame({"image": [to_jpeg(img) for img in images]}).join(data.social("test").iloc[:3])
    out = model.predict(frame)
    assert list(out.columns) == ["score", "label"] and len(out) == 3 and out["score"].notna().all()
    if data.task == "binary":
        assert out["score"].between(0, 1).all()
    # the drift reference stored with the run is what the logged model computes for the same images
    reference = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=candidate.run_id,
                                                                    artifact_path="reference/profile.parquet"))
    assert reference["image_id"].tolist() == data.rows("test")["image_id"].tolist()
    profiled = model.unwrap_python_model().profile_images(data.split_images("test")[:3])
    pd.testing.assert_frame_equal(reference.drop(columns=["image_id", "score"]).iloc[:3], profiled, rtol=1e-4)
    return out

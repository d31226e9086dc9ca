"""The one predictor interface: every candidate, classical or CNN, is this MLflow pyfunc.

Input: a DataFrame with an ``image`` column of encoded bytes and optional social columns.
Output: ``score`` (probability of "popular", or the predicted popularity score) and ``label``.
Feature extraction lives inside the model, so the registry, the evaluation and the service treat
every candidate alike. Models are logged as code (no pickled Python objects); scikit-learn
estimators are stored with skops and CNN weights as a plain state dict loaded with
``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image

from pipelines.data.images import decode
from pipelines.features.profile import Profiler
from pipelines.features.social import NUMERIC_REQUEST_COLUMNS, TEXT_COLUMNS, request_frame
from pipelines.settings import ImageLimits, Settings

CODE_DIR = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).with_name("model_code.py")


def signature() -> ModelSignature:
    inputs = Schema([ColSpec("binary", "image")]
                    + [ColSpec("double", c, required=False) for c in NUMERIC_REQUEST_COLUMNS]
                    + [ColSpec("string", c, required=False) for c in TEXT_COLUMNS])
    outputs = Schema([ColSpec("double", "score"), ColSpec("long", "label")])
    return ModelSignature(inputs=inputs, outputs=outputs)


class PopularityModel(mlflow.pyfunc.PythonModel):
    """Loads the candidate named by its ``model_config`` and scores images."""

    def load_context(self, context) -> None:
        from pipelines.models import backends

        self.config = dict(context.model_config)
        self.limits = ImageLimits(**self.config.get("limits", {}))
        serving = Settings().serving  # read when loaded: POPULARITY_SERVING__RUNTIME and __THREADS
        self.backend = backends.load(self.config, context.artifacts, serving.runtime, serving.threads)
        profiler = context.artifacts.get("profiler")
        self.profiler = Profiler.load(profiler) if profiler else Profiler()
        self.runtime: dict[str, dict] = {}  # which runtime runs each network, and why (the service's /model)
        if self.backend.choice is not None:  # a CNN, or a featurizer's embedding trunk
            self.runtime["model"] = self.backend.choice.as_dict()
        if self.profiler.components:
            choice = self.profiler.use_graph(context.artifacts.get("profiler_onnx"), self.config.get("profiler_onnx"),
                                             serving.runtime, serving.threads)
            self.runtime["profiler"] = choice.as_dict()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        limits = self.limits
        images = [decode(bytes(b), limits.max_bytes, limits.max_pixels, max_side=limits.model_side)[0]
                  for b in model_input["image"]]
        return self.predict_images(images, request_frame(model_input))

    def predict_images(self, images: list[Image.Image], social: pd.DataFrame | None = None) -> pd.DataFrame:
        """Scores for already decoded images: the service's batched path calls this directly."""
        social = request_frame(pd.DataFrame(index=range(len(images))) if social is None else social)
        scores = np.asarray(self.backend.score(images, social), dtype=float)
        if self.config["task"] == "binary":
            labels = (scores >= self.config.get("threshold", 0.5)).astype(int)
        else:
            labels = (scores >= self.config.get("threshold", float(np.median(scores)))).astype(int)
        return pd.DataFrame({"score": scores, "label": labels.astype(np.int64)})

    def profile_images(self, images: list[Image.Image]) -> pd.DataFrame:
        """The drift monitor's features of decoded images, projected with this model's training PCA."""
        return self.profiler.transform(images)


def input_example(image_bytes: bytes) -> pd.DataFrame:
    return pd.DataFrame({"image": [image_bytes]})


def log_model(config: dict, artifacts: dict[str, str], example_image: bytes, name: str = "model"):
    """Log a candidate as the project's pyfunc, with signature, input example and our code."""
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        model_config=json.loads(json.dumps(config)),
        artifacts=artifacts,
        code_paths=[str(CODE_DIR)],
        signature=signature(),
        input_example=input_example(example_image),
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    names = ["mlflow", "torch", "torchvision", "scikit-learn", "skops", "pandas", "numpy", "pillow", "scipy",
             "pydantic-settings", "tqdm", "opencv-python-headless", "onnxruntime"]
    return [f"{n}=={version(n)}" for n in names]


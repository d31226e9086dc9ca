"""What runs inside the pyfunc: a scikit-learn estimator on image features, or a torch network."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipelines.data.images import to_array
from pipelines.features.featurizer import ImageFeaturizer

# our own estimators (e.g. the scale × shape sequence model) ship as code beside the weights
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "pipelines.models.")


# skops.io is imported where it is used: importing it imports every scikit-learn estimator (about 0.8 s),
# which every command and service that touches this module would pay, classical model or not. Likewise
# torch, torchvision and ONNX Runtime (about 3 s of a core), imported by the CNN's backend when one loads.
TORCH_SHIM = "sklearn.externals.array_api_compat.torch"


def _skops_io():
    """skops.io, imported without torch. Its trusted types come from scikit-learn's ``all_estimators()``,
    whose package walk imports the array-API shim for torch, and with it torch (6–10 s of a core), for no
    estimator: the walk skips a package whose import fails, so the shim fails to import (``None`` in
    ``sys.modules``) while skops.io loads, unless torch is already there."""
    if "skops.io" not in sys.modules and "torch" not in sys.modules and TORCH_SHIM not in sys.modules:
        sys.modules[TORCH_SHIM] = None
        try:
            import skops.io
        finally:
            if sys.modules.get(TORCH_SHIM, "") is None:
                del sys.modules[TORCH_SHIM]
    import skops.io

    return skops.io


def save_estimator(estimator, path: Path) -> str:
    _skops_io().dump(estimator, path)
    return str(path)


def load_estimator(path: str):
    """Load a skops file, trusting only scikit-learn, NumPy, SciPy and this package's model types."""
    skops_io = _skops_io()
    untrusted = skops_io.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ValueError(f"{path} holds types outside scikit-learn/NumPy/SciPy/pipelines.models: {refused}")
    return skops_io.load(path, trusted=untrusted)


class SklearnBackend:
    """A scikit-learn estimator on the featurizer's table; an embedding trunk, where the featurizer has
    one, runs as its exported graph in ONNX Runtime on CPU, else in torch (see ``runtime.choose``)."""

    def __init__(self, config: dict, artifacts: dict, runtime: str = "onnx", threads: int = 0):
        from pipelines.runtime import onnx_network

        self.task = config["task"]
        self.featurizer = ImageFeaturizer(**{k: tuple(v) if k == "groups" else v
                                             for k, v in config["featurizer"].items()})
        self.columns = config["columns"]
        self.estimator = load_estimator(artifacts["estimator"])
        self.network, self.choice = None, None
        if "embeddings" in self.featurizer.groups:
            self.network, self.choice = onnx_network(runtime, artifacts.get("featurizer_onnx"),
                                                     config.get("featurizer_onnx"), threads)

    def features(self, images: list[Image.Image], social: pd.DataFrame) -> pd.DataFrame:
        table = self.featurizer.transform(images, social, self.network)
        for column in self.columns:
            if column not in table:
                table[column] = social[column].to_numpy() if column in social else np.nan
        return table[self.columns]

    def score(self, images: list[Image.Image], social: pd.DataFrame) -> np.ndarray:
        x = self.features(images, social)
        if self.task == "binary":
            return self.estimator.predict_proba(x)[:, 1]
        return self.estimator.predict(x)


class TorchBackend:
    """A CNN: its exported ONNX graph in ONNX Runtime on CPU, else the torch network (see ``runtime.choose``)."""

    def __init__(self, config: dict, artifacts: dict, runtime: str = "onnx", threads: int = 0):
        import torch

        from pipelines import vision
        from pipelines.models import cnn
        from pipelines.runtime import OnnxNetwork, choose

        self.task = config["task"]
        self.px = config["image_px"]
        self.crop = config.get("crop", "resized")
        self.target_mean = config.get("target_mean", 0.0)
        self.target_std = config.get("target_std", 1.0)
        self.calibration = config.get("calibration")  # Platt scaling of ordinal/ranking outputs
        self.flip_average = config.get("flip_average", False)  # models logged before it: one view
        self.choice = choose(runtime, artifacts.get("onnx"), config.get("onnx"))
        if self.choice.runtime == "onnx":
            self.model = OnnxNetwork(artifacts["onnx"], threads)
            return
        self.model = cnn.build_network(config["backbone"], pretrained=False)
        state = torch.load(artifacts["weights"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.to(vision.device()).eval()

    def score(self, images: list[Image.Image], social: pd.DataFrame) -> np.ndarray:
        from pipelines import vision
        from pipelines.models import cnn

        pixels = np.stack([to_array(img, vision.load_px(self.px, self.crop)) for img in images])
        raw = cnn.predict(self.model, pixels, self.px, self.crop, flip_average=self.flip_average)
        if self.calibration:
            slope, intercept = self.calibration
            raw = slope * raw + intercept
        if self.task == "binary":
            return 1 / (1 + np.exp(-raw))
        return raw * self.target_std + self.target_mean


def load(config: dict, artifacts: dict, runtime: str = "onnx", threads: int = 0):
    """The candidate's backend; a CNN runs in ``runtime`` where it can (ONNX Runtime with ``threads``)."""
    return {"torch": TorchBackend, "sklearn": SklearnBackend}[config["kind"]](config, artifacts, runtime, threads)


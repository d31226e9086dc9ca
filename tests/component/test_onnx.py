"""Export at training, verified: a CNN candidate carries its ONNX graph and the drift profile's trunk's,
the parity check is on the run and in the model's config, and the loaded model scores alike under ONNX
Runtime and torch; a model without a graph, or with one that failed parity, serves with torch and says why."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from pipelines import runtime
from pipelines.models import backends
from pipelines.models.pyfunc import log_model
from pipelines.tasks import PRIMARY
from pipelines.training.runs import train_candidate

pytestmark = pytest.mark.usefixtures("tracking")

# on a CUDA machine torch runs every network, by design
EXPECTED = "torch" if runtime.cuda_available() else "onnx"


@pytest.fixture(scope="module")
def small_cnn(binary):
    data, parent = binary
    mlflow.set_tracking_uri(data.settings.tracking_uri)
    return train_candidate("small-cnn", data, parent, quick=True)


def _load(uri: str, runtime: str, monkeypatch):
    monkeypatch.setenv("POPULARITY_SERVING__RUNTIME", runtime)
    return mlflow.pyfunc.load_model(uri)


def _scores(pyfunc, images) -> np.ndarray:
    return pyfunc.unwrap_python_model().predict_images(images)["score"].to_numpy()


def test_a_cnn_candidate_logs_its_graph_checked_on_validation(binary, small_cnn):
    data, _ = binary
    run = mlflow.get_run(small_cnn.run_id)
    assert run.data.tags["onnx_parity"] == "passed" and run.data.tags["profiler_onnx_parity"] == "passed"
    metrics, primary = run.data.metrics, PRIMARY[data.task]
    assert 0 <= metrics["onnx_max_abs_diff"] <= 1e-4 and metrics["onnx_images"] == len(data.rows("val"))
    assert metrics[f"onnx_val_{primary}_onnx"] == pytest.approx(metrics[f"onnx_val_{primary}_torch"], abs=1e-6)
    assert metrics["profiler_onnx_max_abs_diff"] <= 1e-3
    pyfunc = mlflow.pyfunc.load_model(small_cnn.model_uri)
    flavor = pyfunc.metadata.flavors["python_function"]
    assert {"weights", "onnx", "profiler", "profiler_onnx"} <= set(flavor["artifacts"])
    assert flavor["artifacts"]["onnx"]["path"].endswith(".onnx")
    config = pyfunc.model_config
    assert config["onnx"]["passed"] and config["onnx"]["max_abs_diff"] == metrics["onnx_max_abs_diff"]
    assert config["profiler_onnx"]["passed"]


def test_the_loaded_model_scores_alike_under_onnx_runtime_and_torch(binary, small_cnn, monkeypatch):
    data, _ = binary
    images = data.split_images("test")
    onnx = _load(small_cnn.model_uri, "onnx", monkeypatch)
    eager = _load(small_cnn.model_uri, "torch", monkeypatch)
    assert onnx.unwrap_python_model().runtime["model"]["runtime"] == EXPECTED
    assert onnx.unwrap_python_model().runtime["profiler"]["runtime"] == EXPECTED
    assert eager.unwrap_python_model().runtime == {
        "model": {"runtime": "torch", "reason": "the runtime setting asks for torch"},
        "profiler": {"runtime": "torch", "reason": "the runtime setting asks for torch"}}
    np.testing.assert_allclose(_scores(onnx, images), _scores(eager, images), rtol=0, atol=1e-4)
    profiles = [m.unwrap_python_model().profile_images(images) for m in (onnx, eager)]
    np.testing.assert_allclose(profiles[0].to_numpy(float), profiles[1].to_numpy(float), rtol=0, atol=1e-3)


def test_a_model_logged_without_a_graph_still_serves_with_torch(binary, small_cnn, monkeypatch, tmp_path):
    """A model registered before export at training (no graph, no parity record) loads and scores as before."""
    data, parent = binary
    logged = mlflow.pyfunc.load_model(small_cnn.model_uri)
    config = {k: v for k, v in logged.model_config.items() if k not in ("onnx", "profiler_onnx")}
    local = mlflow.artifacts.download_artifacts(small_cnn.model_uri, dst_path=str(tmp_path))
    artifacts = {name: f"{local}/{entry['path']}" for name, entry in
                 logged.metadata.flavors["python_function"]["artifacts"].items() if name in ("weights", "profiler")}
    with mlflow.start_run(parent_run_id=parent, nested=True,
                          experiment_id=mlflow.get_run(parent).info.experiment_id):
        from pipelines.data.images import to_jpeg

        old = log_model(config, artifacts, to_jpeg(data.split_images("train")[0]))
    loaded = _load(old.model_uri, "onnx", monkeypatch)
    chosen = loaded.unwrap_python_model().runtime
    assert chosen["model"]["runtime"] == "torch" and chosen["profiler"]["runtime"] == "torch"
    if not runtime.cuda_available():
        assert "no ONNX graph" in chosen["model"]["reason"]
    images = data.split_images("test")
    np.testing.assert_allclose(_scores(loaded, images), _scores(logged, images), rtol=0, atol=1e-4)


def test_a_graph_that_failed_parity_serves_with_torch_and_says_why(small_cnn, tmp_path):
    import torch

    logged = mlflow.pyfunc.load_model(small_cnn.model_uri)
    local = mlflow.artifacts.download_artifacts(small_cnn.model_uri, dst_path=str(tmp_path))
    artifacts = {name: f"{local}/{entry['path']}"
                 for name, entry in logged.metadata.flavors["python_function"]["artifacts"].items()}
    failed = {**logged.model_config, "onnx": {"passed": False, "reason": "max |Δ| 0.02 over 15 validation images"}}
    backend = backends.load(failed, artifacts, runtime="onnx")
    assert backend.choice.runtime == "torch" and isinstance(backend.model, torch.nn.Module)
    if not runtime.cuda_available():
        assert backend.choice.reason == "the ONNX graph failed its parity check: max |Δ| 0.02 over 15 validation images"

"""The drift profile's embedding trunk as an ONNX graph cached per machine: exported and checked against
torch the first time, read back with its parity record afterwards, so that training and serving a
classical model never import torch (6–10 s of a core per process on the test machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.features import embeddings
from pipelines.features.monitored import PROJECTION_PREFIX
from pipelines.features.profile import Profiler
from pipelines.settings import Settings

pytestmark = pytest.mark.usefixtures("tracking")
ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _train_in_a_fresh_process(data, parent: str, name: str) -> dict:
    """Train ``name`` on the module's snapshot in a new Python process, load the logged model there, score
    and profile the test images with it; the run, the model, its runtimes, its scores, and whether
    anything in that process imported torch."""
    return _python("""
        import json, sys
        from pathlib import Path
        import mlflow
        from pipelines.data.snapshots import Snapshot
        from pipelines.training.data import TrainingData
        from pipelines.training.runs import train_candidate
        from tests.component.tiny import tiny_settings
        settings = tiny_settings(Path(sys.argv[1]))
        mlflow.set_tracking_uri(settings.tracking_uri)
        data = TrainingData(Snapshot.open(settings.datasets_dir, sys.argv[2]), "binary", settings)
        candidate = train_candidate(sys.argv[4], data, sys.argv[3], quick=True)
        model = mlflow.pyfunc.load_model(candidate.model_uri).unwrap_python_model()
        scores = model.predict_images(data.split_images("test"))["score"].tolist()
        model.profile_images(data.split_images("test")[:3])
        print(json.dumps({"run": candidate.run_id, "uri": candidate.model_uri, "runtime": model.runtime,
                          "scores": scores, "torch": "torch" in sys.modules}))
        """, str(data.settings.home), data.snapshot.id, parent, name)


def test_the_trunk_is_exported_once_checked_and_read_back_without_torch(tmp_path, photographs):
    images = [Image.fromarray(a) for a in photographs.values()] * 4
    cache = tmp_path / "cache"
    graph, record = embeddings.trunk_graph("mobilenet_v2", 64, cache, images)
    assert record["passed"] and record["images"] == len(images) and record["max_abs_diff"] <= record["tolerance"]
    assert Path(graph).parent == cache
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".onnx"]  # nothing half-written left behind

    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    read_back = _python("""
        import json, sys
        from pathlib import Path
        import numpy as np
        from PIL import Image
        from pipelines import runtime
        from pipelines.features import embeddings
        graph, record = embeddings.trunk_graph("mobilenet_v2", 64, Path(sys.argv[1]), [])
        z = embeddings.embed([Image.open(p) for p in sys.argv[2:]], px=64, network=runtime.OnnxNetwork(graph))
        print(json.dumps({"graph": graph, "record": record, "z": z.tolist(), "torch": "torch" in sys.modules}))
        """, str(cache), *paths)
    assert read_back["graph"] == graph and read_back["record"] == record and not read_back["torch"]
    torch_z = embeddings.embed([Image.open(p) for p in paths], px=64)  # flipped and averaged, by torch
    assert np.abs(np.asarray(read_back["z"]) - torch_z).max() <= record["tolerance"]


def test_a_classical_candidate_trains_and_profiles_without_torch(binary):
    """With the machine's graph in the cache, a stats-gb candidate's whole training (features, fit, the
    drift reference, the logged pyfunc) and the logged model's profile of new images run without torch;
    its run carries the graph's parity record, and the reference equals what the model computes."""
    data, parent = binary
    cache = Settings().cache_dir
    embeddings.trunk_graph(Profiler.embed_backbone, Profiler.embed_px, cache, data.split_images("train"))
    trained = _train_in_a_fresh_process(data, parent, "stats-gb")
    assert not trained["torch"]
    assert trained["runtime"]["profiler"]["runtime"] == "onnx"
    run = mlflow.get_run(trained["run"])
    assert run.data.tags["profiler_onnx_parity"] == "passed" and run.data.metrics["profiler_onnx_max_abs_diff"] <= 1e-3
    reference = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=trained["run"],
                                                                    artifact_path="reference/profile.parquet"))
    profiled = mlflow.pyfunc.load_model(trained["uri"]).unwrap_python_model().profile_images(data.split_images("test")[:3])
    projection = [c for c in profiled if c.startswith(PROJECTION_PREFIX)]
    assert projection and np.allclose(reference[projection].to_numpy()[:3], profiled[projection].to_numpy(), atol=1e-4)


def test_an_embedding_candidate_trains_and_serves_without_torch(binary):
    """A linear model on the ImageNet embedding (``emb-linear``, the image-only default's half) embeds its
    training images and, once logged, its requests with the featurizer trunk's ONNX graph: with both graphs
    in the machine's cache nothing imports torch. Its run carries the graph's parity record, and its
    scores equal the same model's with torch embedding (``POPULARITY_SERVING__RUNTIME=torch``)."""
    data, parent = binary
    featurizer = data.featurizer(("embeddings",))
    for px in (Profiler.embed_px, featurizer.embed_px):
        embeddings.trunk_graph(featurizer.embed_backbone, px, Settings().cache_dir, data.split_images("train"))
    served = _train_in_a_fresh_process(data, parent, "emb-linear")
    assert not served["torch"]
    assert served["runtime"]["model"]["runtime"] == "onnx"
    run = mlflow.get_run(served["run"])
    assert run.data.tags["featurizer_onnx_parity"] == "passed"
    assert run.data.metrics["featurizer_onnx_max_abs_diff"] <= 1e-3
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POPULARITY_SERVING__RUNTIME", "torch")
        with_torch = mlflow.pyfunc.load_model(served["uri"]).unwrap_python_model()
    assert with_torch.runtime["model"]["runtime"] == "torch"
    torch_scores = with_torch.predict_images(data.split_images("test"))["score"].to_numpy()
    assert np.abs(torch_scores - np.asarray(served["scores"])).max() <= 1e-4

"""The CPU runtime: an exported graph computes what its torch network does, one session per graph and
process, and the choice of runtime says why it fell back to torch."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import runtime

CPU_ONLY = pytest.mark.skipif(runtime.cuda_available(), reason="CUDA keeps torch by design")


def test_an_exported_network_scores_as_torch_does_at_any_batch(tmp_path):
    import torch

    from pipelines.models import cnn

    torch.manual_seed(0)
    network = cnn.SmallCNN().eval()
    graph = runtime.export(network, 64, tmp_path / "small.onnx")
    exported = runtime.OnnxNetwork(graph, threads=1)
    pixels = np.random.default_rng(0).integers(0, 256, (5, 73, 73, 3), dtype=np.uint8)
    for batch in (1, 2, 5):  # the batch axis is dynamic; the flip average doubles it
        expected = cnn.predict(network, pixels[:batch], 64, "random-crop", flip_average=True)
        got = cnn.predict(exported, pixels[:batch], 64, "random-crop", flip_average=True)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_one_session_per_graph_and_process(tmp_path):
    from pipelines.models import cnn

    graph = runtime.export(cnn.SmallCNN().eval(), 64, tmp_path / "small.onnx")
    assert runtime.OnnxNetwork(graph, 1).session is runtime.OnnxNetwork(str(graph), 1).session


@CPU_ONLY
def test_the_choice_says_why_torch_runs():
    assert runtime.choose("onnx", "m.onnx", {"passed": True}).runtime == "onnx"
    assert runtime.choose("torch", "m.onnx", {"passed": True}).reason == "the runtime setting asks for torch"
    old = runtime.choose("onnx", None, None)
    assert old.runtime == "torch" and "no ONNX graph" in old.reason
    failed = runtime.choose("onnx", "m.onnx", {"passed": False, "reason": "max |Δ| 0.3"})
    assert failed.runtime == "torch" and failed.reason.endswith("max |Δ| 0.3")
    unexported = runtime.choose("onnx", None, {"passed": False, "reason": "export failed: Unsupported op"})
    assert unexported.as_dict() == {"runtime": "torch", "reason": "export failed: Unsupported op"}


def test_parity_fails_past_the_tolerance_and_on_a_shape_mismatch():
    ok = runtime.parity(np.array([0.1, 0.9]), np.array([0.1 + 5e-5, 0.9]), val_roc_auc_torch=0.8)
    assert ok["passed"] and ok["max_abs_diff"] == pytest.approx(5e-5) and ok["val_roc_auc_torch"] == 0.8
    off = runtime.parity(np.array([0.1, 0.9]), np.array([0.1, 0.95]))
    assert not off["passed"] and "exceeds" in off["reason"]
    assert not runtime.parity(np.zeros(3), np.zeros(2))["passed"]
    assert not runtime.parity(np.zeros(2), np.array([np.nan, 0.0]))["passed"]

"""Registering a challenger when the process is killed mid-way (kill -9: no cleanup runs): the registry
keeps no version that lacks a tag the gate and the model card read."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from mlflow import MlflowClient

CHILD = textwrap.dedent('''
    import os, signal, sys
    from types import SimpleNamespace

    import mlflow
    from mlflow import MlflowClient

    from pipelines import registry
    from pipelines.settings import Settings

    class Constant(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return [0.5] * len(model_input)

    settings = Settings(home=sys.argv[1], mlflow_tracking_uri=sys.argv[2])
    mlflow.set_tracking_uri(sys.argv[2])
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant())
    candidate = SimpleNamespace(name="constant", family="test", run_id=run.info.run_id, model_uri=info.model_uri,
                                metrics={"roc_auc": 0.5}, validation={"roc_auc": 0.5}, params={})

    def killed(*args, **kwargs):  # the process dies here, as under kill -9
        os.kill(os.getpid(), signal.SIGKILL)

    MlflowClient.set_model_version_tag = killed  # after the version exists, before its tags are all on it
    MlflowClient.set_registered_model_alias = killed
    registry.register_challenger(candidate, "binary", "snap-1", {}, {}, settings)
''')


def test_a_registration_killed_mid_way_leaves_no_version_without_its_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "home"), uri], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    versions = MlflowClient(uri).search_model_versions("name = 'popularity-binary'")
    assert versions, "the kill came after the version was created"
    for version in versions:
        assert {"candidate", "snapshot", "run_id", "metrics", "trained_at", "split"} <= set(version.tags), version.tags

"""Collection and feature extraction on a Dask cluster of two worker processes give the serial path's
snapshot and tables."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.integration.stack import clean_env

pytestmark = pytest.mark.integration

# Run in a child process so that Prefect and MLflow read this test's home, not the developer's.
SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    import pandas as pd
    from distributed import Client, LocalCluster, get_task_stream

    from flows.scaleout import TRAINING_GROUPS, compute_features, fetch_items
    from pipelines.features.featurizer import ImageFeaturizer
    from pipelines.training.data import TrainingData
    from pipelines.data.collect import collect
    from pipelines.features.cache import snapshot_features
    from pipelines.settings import get_settings
    from pipelines.data.sources import parse_spec

    if __name__ == "__main__":
        settings = get_settings()
        settings.export_environment()
        snap = collect(parse_spec("demo:60", settings), settings)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \\
                Client(cluster) as client, get_task_stream(client) as stream:
            runner = f"dask:{cluster.scheduler_address}"
            spread = collect(parse_spec("demo:60", settings), settings, name="spread", items=fetch_items("demo:60", runner))
            tables = compute_features(str(snap.path), runner)
        pd.testing.assert_frame_equal(spread.manifest, snap.manifest)
        workers = {t["worker"] for t in stream.data}
        assert len(stream.data) >= 4 + 2 * 4, f"only {len(stream.data)} tasks ran on the cluster"
        assert len(workers) == 2, f"tasks ran on {workers}"
        data = TrainingData(snap, "binary", settings)
        for group in TRAINING_GROUPS:
            feat = ImageFeaturizer.from_settings(settings.features, (group,))
            assert feat == data.featurizer((group,)), "training would read another cache entry"
            serial = snapshot_features(snap, feat, Path(sys.argv[1]), settings.images, settings.features.batch_size)
            pd.testing.assert_frame_equal(pd.read_parquet(tables[group]), serial)
        print("same snapshot and features on", len(workers), "workers")
""")


def test_dask_cluster_gives_the_serial_snapshot_and_features(tmp_path):
    env = clean_env(POPULARITY_HOME=str(tmp_path / "home"), POPULARITY_FEATURES__BATCH_SIZE="15",
                    POPULARITY_DOWNLOAD__BATCH_SIZE="15")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "serial")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "same snapshot and features on 2 workers" in done.stdout

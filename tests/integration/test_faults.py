"""Faults a team's stack meets: the MLflow server dies mid-training, a download times out."""

from __future__ import annotations

import http.server
import io
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from mlflow import MlflowClient
from PIL import Image

from tests.integration import stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _cli(args: list[str], env: dict, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, cwd=stack.REPO)


def test_mlflow_server_killed_mid_training_leaves_no_half_model(tmp_path):
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    server, url = stack.mlflow_server(backend, tmp_path / "artifacts", tmp_path / "logs")
    port = url.rsplit(":", 1)[1]
    env = stack.clean_env(POPULARITY_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=url,
                          MLFLOW_HTTP_REQUEST_MAX_RETRIES="1", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
                          MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        assert _cli(["collect", "--source", "demo:80"], env).returncode == 0
        training = subprocess.Popen([sys.executable, "-m", "cli", "train", "--models", "colors-svm,stats-gb",
                                     "--quick"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=stack.REPO)
        client = MlflowClient(url)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and training.poll() is None:
            experiment = client.get_experiment_by_name("popularity")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any("mlflow.parentRunId" in r.data.tags for r in runs):  # a candidate is being trained
                break
            time.sleep(0.3)
        assert training.poll() is None, "training ended before a candidate run started"
        server.stop()
        _, stderr = training.communicate(timeout=240)
        assert training.returncode != 0, "training went on without its tracking server"
        assert f"127.0.0.1:{port}" in stderr and ("Max retries" in stderr or "Connection refused" in stderr), \
            stderr[-3000:]
        assert "Finished in state Failed" in stderr

        server, url = stack.mlflow_server(backend, tmp_path / "artifacts", tmp_path / "logs", port=int(port))
        assert not client.search_model_versions("name = 'popularity-binary'"), "a half-registered model is left"
        again = _cli(["train", "--models", "colors-svm,stats-gb", "--quick"], env)
        assert again.returncode == 0, again.stderr[-3000:]
        versions = client.search_model_versions("name = 'popularity-binary'")
        assert [v.status for v in versions] == ["READY"]
    finally:
        server.stop()


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


class _SlowThenFast(http.server.BaseHTTPRequestHandler):
    """Stalls past the client's timeout on the first two requests, then serves a JPEG."""

    hits: list[float] = []
    body = _jpeg()

    def do_GET(self):  # noqa: N802 (the http.server API)
        self.hits.append(time.monotonic())
        if len(self.hits) <= 2:
            time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


PREPARE = textwrap.dedent("""
    import sys
    from flows.scaleout import fetch_items
    from pipelines.settings import get_settings

    get_settings().export_environment()
    print("RESULT", [type(item).__name__ for item in fetch_items(sys.argv[1], "local")])
""")


def test_a_timed_out_download_is_retried_by_prefect_with_backoff(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowThenFast)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    manifest = tmp_path / "photos.csv"
    manifest.write_text(f"image,likes\nhttp://127.0.0.1:{server.server_port}/a.jpg,3\n")
    env = stack.clean_env(POPULARITY_HOME=str(tmp_path / "home"), POPULARITY_DOWNLOAD__TIMEOUT_S="0.5",
                          POPULARITY_DOWNLOAD__RETRIES="3", POPULARITY_DOWNLOAD__BACKOFF_S="1",
                          POPULARITY_DOWNLOAD__ALLOW_PRIVATE="true")
    try:
        done = subprocess.run([sys.executable, "-c", PREPARE, f"manifest:{manifest}"],
                              env=env, capture_output=True, text=True, timeout=180, cwd=stack.REPO)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT ['Item']" in done.stdout
    hits = _SlowThenFast.hits
    assert len(hits) == 3
    gaps = [b - a for a, b in zip(hits, hits[1:])]
    assert gaps[1] > gaps[0] + 0.5, f"no exponential backoff between attempts: {gaps}"
    assert "Retry 1/3" in done.stderr and "Retry 2/3" in done.stderr

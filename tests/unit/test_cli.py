"""Usage errors are answered at once, in one line, before any server starts or any model code loads;
every error is one line on stderr and, under ``--json``, ``{"error", "kind"}`` as stdout's last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "POPULARITY_HOME": str(home), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("import time:")]


def test_an_unknown_model_is_a_usage_error_before_torch_or_prefect(tmp_path):
    done = _cli(tmp_path / "home", "train", "--models", "no-such-model")
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "unknown models ['no-such-model']" in message and "stats-gb" in message
    assert not {"torch", "prefect", "mlflow"} & _imported(done.stderr)
    assert not (tmp_path / "home" / "prefect").exists()


def test_training_without_a_snapshot_says_what_to_run(tmp_path):
    done = _cli(tmp_path / "home", "train", "--models", "stats-gb")
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "no snapshot" in message and "popularity collect" in message
    assert not {"torch", "prefect"} & _imported(done.stderr)


def test_stack_up_without_postgresql_says_what_it_needs_and_starts_nothing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cli", "stack", "up"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "POPULARITY_HOME": str(tmp_path / "home"),
                               "POPULARITY_STACK__POSTGRES_URL": "postgresql+psycopg2://postgres@127.0.0.1:9/postgres"})
    assert done.returncode == 1
    (message,) = _messages(done.stderr)
    assert "needs PostgreSQL at postgresql+psycopg2://postgres@127.0.0.1:9" in message
    assert "POPULARITY_STACK__POSTGRES_URL" in message
    assert not (tmp_path / "home" / "stack" / "stack.json").exists()


def test_stack_status_and_env_say_when_no_stack_runs(tmp_path):
    status = _cli(tmp_path / "home", "stack", "status", "--json")
    assert status.returncode == 1 and '"running": false' in status.stdout
    env = _cli(tmp_path / "home", "stack", "env")
    assert env.returncode == 1 and "popularity stack up" in _messages(env.stderr)[0]


def test_a_worker_without_a_prefect_server_is_a_usage_error(tmp_path):
    done = _cli(tmp_path / "home", "worker", "--pool", "popularity")
    assert done.returncode == 2 and "PREFECT_API_URL" in _messages(done.stderr)[0]
    assert "prefect" not in _imported(done.stderr)


def _error(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_unknown_option_is_one_line_and_a_usage_error_under_json(tmp_path):
    done = _cli(tmp_path / "home", "train", "--no-such-flag", "--json")
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "No such option: --no-such-flag" in message and "popularity train --help" in message
    assert _error(done) == {"error": message.removeprefix("error: "), "kind": "usage"}


def test_validate_without_a_snapshot_answers_before_prefect_starts(tmp_path):
    done = _cli(tmp_path / "home", "validate", "--json")
    assert done.returncode == 2 and _error(done)["kind"] == "usage"
    assert "popularity collect" in _messages(done.stderr)[0]
    assert "prefect" not in _imported(done.stderr)


def test_an_unreachable_service_is_one_line_and_debug_adds_the_traceback(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"not even an image")
    args = ("predict", "--url", "http://127.0.0.1:9", str(image), "--json")
    done = _cli(tmp_path / "home", *args)
    assert done.returncode == 1
    (message,) = _messages(done.stderr)
    assert "no service answered at http://127.0.0.1:9" in message and "popularity serve" in message
    assert _error(done)["kind"] == "unavailable"
    assert not {"prefect", "mlflow", "torch"} & _imported(done.stderr)
    debug = _cli(tmp_path / "home", *args, "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "ConnectError" in debug.stderr


def test_a_read_only_command_without_a_champion_says_so_without_prefect(tmp_path):
    done = _cli(tmp_path / "home", "model", "--json")
    assert done.returncode == 1
    assert _error(done)["kind"] == "not_found" and "no champion yet" in _error(done)["error"]
    assert "prefect" not in _imported(done.stderr)
    assert not (tmp_path / "home" / "prefect").exists()


def test_the_monitor_and_the_registry_commands_load_without_the_cnn_stack():
    """The hourly monitor's flow-run process, `popularity monitor`, `feedback`, `model` and `promote` import
    torch, torchvision and ONNX Runtime (about 3 s of a core) only when they go on to train, embed or load a
    CNN: the CNN's backend and fit, the trunk's export and data-parallel training import them there (a
    classical training runs end to end without torch: tests/component/test_trunk_cache.py)."""
    modules = ["flows.monitoring_flows", "flows.training_flows", "cli.pipeline_commands", "cli.outcome_commands",
               "pipelines.models.pyfunc", "pipelines.promotion", "pipelines.training.trainers",
               "pipelines.training.runs", "pipelines.training.export", "pipelines.features.embeddings",
               "pipelines.runtime", "pipelines.vision"]
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {', '.join(modules)}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = _imported(done.stderr)
    assert set(modules) <= imported
    assert not imported & {"torch", "torchvision", "onnxruntime"}


@pytest.mark.parametrize("key", [None, "", "  "])
def test_serving_off_loopback_without_an_api_key_is_refused_before_bentoml_starts(tmp_path, monkeypatch, key):
    """An empty or blank POPULARITY_API_KEY is no key: the guard would let everyone in."""
    monkeypatch.delenv("POPULARITY_API_KEY", raising=False)
    env = {"POPULARITY_API_KEY": key} if key is not None else {}
    done = _cli(tmp_path / "home", "serve", "--host", "0.0.0.0", "--port", "9", env=env)
    assert done.returncode == 2
    (message,) = _messages(done.stderr)
    assert "without an API key" in message and "POPULARITY_API_KEY" in message and "--insecure" in message
    assert "bentoml" not in _imported(done.stderr)


def test_only_loopback_addresses_count_as_loopback():
    from cli.service_commands import loopback

    assert all(map(loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(loopback, ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com", "localhost.evil.com"]))


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_is_no_key_in_the_settings_and_the_guard(monkeypatch, key):
    from pipelines.settings import Settings
    from serving.guards import ApiKey, guards

    monkeypatch.setenv("POPULARITY_API_KEY", key)
    settings = Settings()
    assert settings.api_key is None
    assert [options["key"] for guard, options in guards(settings) if guard is ApiKey] == [None]
    monkeypatch.setenv("POPULARITY_API_KEY", "k3y")
    assert Settings().api_key.get_secret_value() == "k3y"


def test_a_data_set_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path):
    for name in ("../../x", "/tmp/x", "a/b", "..", ".hidden", ""):
        done = _cli(tmp_path / "home", "collect", "--source", "demo:5", "--name", name)
        assert done.returncode == 2, (name, done.stderr)
        (message,) = _messages(done.stderr)
        assert "bad data set name" in message and "prefect" not in _imported(done.stderr), name
    assert not (tmp_path / "x").exists() and not (tmp_path / "home" / "datasets").exists()

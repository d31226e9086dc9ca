"""A real service on a home of its own shows the gauges of a verdict that the monitor wrote through
another home (the worker's, in compose and Kubernetes) into the store they share: not NaN."""

from __future__ import annotations

import time

import httpx
import pytest

from monitoring.performance import PerformanceResult
from monitoring.verdicts import save_verdicts
from ops.processes import ServiceProcess
from pipelines.settings import Settings
from tests.unit.test_verdicts import _drifted

pytestmark = pytest.mark.integration


def _gauges(text: str) -> dict[str, float]:
    return {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("popularity_drift", "popularity_realized_metric", "popularity_decay"))}


def test_the_services_gauges_show_the_verdict_the_monitor_wrote_on_another_host(tmp_path, postgres_database):
    env = {"POPULARITY_HOME": str(tmp_path / "service-home"), "POPULARITY_STORE__URL": postgres_database,
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'service-home' / 'mlflow.db'}",
           "POPULARITY_SERVING__WATCH_INTERVAL_S": "1", "POPULARITY_API_KEY": ""}
    service = ServiceProcess(port=0, log_path=tmp_path / "service.log", env=env)
    service.env.pop("PREFECT_API_URL", None)
    super(ServiceProcess, service).start()  # no champion: /livez, not /readyz
    try:
        service.wait_healthy(f"{service.url}/livez", 240)
        before = _gauges(httpx.get(f"{service.url}/metrics").text)
        assert before["popularity_drift"] != before["popularity_drift"]  # NaN: no verdict yet

        worker = Settings(home=tmp_path / "worker-home", store={"url": postgres_database})
        realized = PerformanceResult(version="1", metric="roc_auc", value=0.58, low=0.5, high=0.66, share=0.3,
                                     enough_data=True, decay=True)
        save_verdicts("popularity-binary", worker, _drifted(), realized)
        deadline = time.monotonic() + 30
        while (now := _gauges(httpx.get(f"{service.url}/metrics").text))["popularity_drift"] != 1.0:
            assert time.monotonic() < deadline, now
            time.sleep(1)
        assert 0 < now["popularity_drifted_share"] <= 1
        assert now["popularity_realized_metric"] == 0.58 and now["popularity_decay"] == 1.0
    finally:
        service.stop()

"""Alerts through a real Prefect server: the automations `popularity worker` registers notify a webhook
(here a local receiver on 127.0.0.1) when a flow run fails, when the monitor's drift event arrives and on
a rollback; a refused run ends in the event the refusal alert expects."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prefect import flow

from flows import alerts
from pipelines.settings import AlertSettings, Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 that keeps every JSON body posted to it."""
    received: queue.Queue = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.put({"path": self.path, **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?token=s3cret", received
    server.shutdown()
    server.server_close()


@flow(name="alert-probe")
def _failing():
    raise RuntimeError("the probe failed on purpose")


@flow(name="alert-probe-refused")
def _refusing():
    from prefect.states import Cancelled

    return Cancelled(name="Refused", message="the gate refused on purpose")  # as retrain_flow ends a refusal


def _refused_event_arrives(state) -> None:
    """A run that ends Cancelled named ``Refused`` is the event the "retrain refused" alert expects."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Refused"]),
                         resource=EventResourceFilter(id=[f"prefect.flow-run.{state.state_details.flow_run_id}"]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while not client.read_events(wanted, limit=10).events:  # the client default (100) is over the server cap
            assert time.monotonic() < deadline, "no prefect.flow-run.Refused event in 60 s"
            time.sleep(1)


def _wait_for(received: queue.Queue, subjects: set[str], timeout_s: float = 120) -> dict[str, dict]:
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while set(found) < subjects and time.monotonic() < deadline:
        try:
            message = received.get(timeout=1)
        except queue.Empty:
            continue
        found.setdefault(message["subject"], message)
    assert set(found) >= subjects, f"only {sorted(found)} arrived in {timeout_s}s"
    return found


def test_a_failed_flow_run_and_a_drift_event_reach_the_webhook(tmp_path, receiver, prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):  # prefect read its settings at import
        _failed_run_and_drift_alert(tmp_path, receiver)


def _failed_run_and_drift_alert(tmp_path, receiver):
    from prefect import get_client
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.worker import EventsWorker

    url, received = receiver
    assert alerts.register_alerts(Settings(home=tmp_path / "home")) == []  # no webhook, no automations
    settings = Settings(home=tmp_path / "home", alerts=AlertSettings(webhook_url=url))
    try:
        names = alerts.register_alerts(settings)
        assert alerts.register_alerts(settings) == names  # registering again replaces, never duplicates
        with get_client(sync_client=True) as client:
            ours = [a for name in names for a in client.read_automations_by_name(name)]
        assert len(ours) == len(alerts.ALERTS) == 6
        block = CustomWebhookNotificationBlock.load(alerts.BLOCK)
        assert block.url == "{{alert_url}}" and "s3cret" not in block.model_dump_json()  # the URL is a secret

        state = _failing(return_state=True)
        assert state.is_failed()
        refused = _refusing(return_state=True)
        assert refused.is_cancelled() and refused.name == "Refused"
        alerts.announce(alerts.DRIFT, "popularity-binary", {"message": "4 of 12 features drifted"})
        alerts.announce(alerts.ROLLBACK, "popularity-binary", {"message": "rolled back by hand to v3"})
        EventsWorker.drain_all(timeout=30)

        found = _wait_for(received, {"[popularity] flow run failed", "[popularity] drift", "[popularity] rollback"})
        assert "rolled back by hand to v3" in found["[popularity] rollback"]["body"]
        failed, drift = found["[popularity] flow run failed"], found["[popularity] drift"]
        assert failed["path"] == "/hook?token=s3cret" and failed["source"] == "popularity"
        assert "alert-probe" in failed["body"] and "Failed" in failed["body"]
        assert "popularity.model.popularity-binary" in drift["body"] and "4 of 12 features drifted" in drift["body"]
        _refused_event_arrives(refused)
    finally:
        alerts.remove_alerts()

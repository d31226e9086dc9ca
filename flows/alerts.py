"""Alerts as Prefect automations: the events that need a person (drift, decay, a refused or failed
retraining, a rollback, a crashed or stuck flow run) notify a webhook through one Prefect notification
block, so the alert rules live on the Prefect server beside the runs they watch.

:func:`register_alerts` saves the webhook block (the URL kept in the block's secrets, never in its
plain fields) and (re-)creates one automation per :data:`ALERTS` entry; nothing is registered while
``POPULARITY_ALERTS__WEBHOOK_URL`` is unset. The monitor emits ``popularity.drift.detected`` and
``popularity.decay.detected``, a rollback emits ``popularity.model.rolled-back`` (:func:`announce`);
flow-run states are Prefect's own events (``prefect.flow-run.<state name>``: a refused retraining ends
Cancelled with the name ``Refused``). The webhook receives JSON ``{"subject", "body", "source"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from pipelines.settings import Settings

BLOCK = "popularity-alerts"  # the notification block's name on the Prefect server
PREFIX = "popularity: "  # every automation this module owns is named with it
DRIFT, DECAY, ROLLBACK = "popularity.drift.detected", "popularity.decay.detected", "popularity.model.rolled-back"
FLOW_RUN = {"prefect.resource.id": "prefect.flow-run.*"}

_FLOW_RUN_BODY = ("Flow run {{ flow_run.name }} of {{ flow.name }} is {{ flow_run.state.name }}: "
                  "{{ flow_run.state.message }}\nEvent {{ event.event }} at {{ event.occurred }}")
_MODEL_BODY = ("{{ event.event }} for {{ event.resource['prefect.resource.id'] }} at {{ event.occurred }}: "
               "{{ event.payload.message }}")


@dataclass(frozen=True)
class Alert:
    name: str
    description: str
    expect: frozenset[str]
    body: str
    match: dict
    related: dict | None = None  # e.g. only runs of one flow
    stuck: bool = False  # proactive: fires when a running flow run goes silent


ALERTS = (
    Alert("drift", "The monitor found input drift on the champion's window.", frozenset({DRIFT}), _MODEL_BODY,
          {"prefect.resource.id": "popularity.model.*"}),
    Alert("decay", "The champion's realized metric fell below its floor.", frozenset({DECAY}), _MODEL_BODY,
          {"prefect.resource.id": "popularity.model.*"}),
    Alert("rollback", "The champion alias was rolled back to the version it replaced.", frozenset({ROLLBACK}),
          _MODEL_BODY, {"prefect.resource.id": "popularity.model.*"}),
    Alert("retrain refused", "The promotion gate refused a retraining's challenger.",
          frozenset({"prefect.flow-run.Refused"}), _FLOW_RUN_BODY, FLOW_RUN,
          {"prefect.resource.role": "flow", "prefect.resource.name": "retrain"}),
    Alert("flow run failed", "A flow run (retraining, monitoring, training, …) failed, crashed or timed out.",
          frozenset({"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}),
          _FLOW_RUN_BODY, FLOW_RUN),
    Alert("flow run stuck", "A running flow run stopped sending heartbeats and ended in no state.",
          frozenset({"prefect.flow-run.*"}), "Flow run {{ event.resource['prefect.resource.name'] }} "
          "({{ event.resource['prefect.resource.id'] }}) sent no heartbeat since {{ event.occurred }}",
          FLOW_RUN, stuck=True),
)


def _trigger(alert: Alert, stuck_after: timedelta):
    from prefect.events.schemas.automations import EventTrigger, Posture

    if alert.stuck:  # the heartbeat every 180 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY) or any later event
        return EventTrigger(match=alert.match, after={"prefect.flow-run.heartbeat"}, expect=set(alert.expect),
                            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                            within=stuck_after)
    return EventTrigger(match=alert.match, match_related=alert.related or {}, expect=set(alert.expect),
                        posture=Posture.Reactive, threshold=1, within=timedelta(0))


def save_block(url: str) -> str:
    """The webhook notification block (overwritten); returns its document id."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="popularity alerts", url="{{alert_url}}", method="POST", secrets={"alert_url": url},
        json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "popularity"})
    return str(block.save(BLOCK, overwrite=True))


def register_alerts(settings: Settings) -> list[str]:
    """Save the webhook block and (re-)create the automations of :data:`ALERTS` on the Prefect server at
    ``PREFECT_API_URL``; returns their names, none when no webhook is configured."""
    url = settings.alerts.webhook_url
    if url is None:
        return []
    from uuid import UUID

    from prefect import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore

    block_id = UUID(save_block(url.get_secret_value()))
    stuck_after = timedelta(minutes=settings.alerts.stuck_minutes)
    names = []
    with get_client(sync_client=True) as client:
        for alert in ALERTS:
            name = PREFIX + alert.name
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
            client.create_automation(AutomationCore(
                name=name, description=alert.description, tags=["popularity"], trigger=_trigger(alert, stuck_after),
                actions=[SendNotification(block_document_id=block_id, subject=f"[popularity] {alert.name}",
                                          body=alert.body)]))
            names.append(name)
    return names


def alerts_line(names: list[str]) -> str:
    """What ``popularity worker`` and ``popularity schedule`` say about the alerts they registered."""
    if not names:
        return "alerts: none (set POPULARITY_ALERTS__WEBHOOK_URL to be notified)"
    short = ", ".join(n.removeprefix(PREFIX) for n in names)
    return f"alerts: {len(names)} Prefect automations notify the webhook ({short})"


def remove_alerts() -> int:
    """Delete the automations this module registered; returns how many."""
    from prefect import get_client

    removed = 0
    with get_client(sync_client=True) as client:
        for alert in ALERTS:
            for old in client.read_automations_by_name(PREFIX + alert.name):
                client.delete_automation(old.id)
                removed += 1
    return removed


def announce(event: str, model: str, payload: dict) -> None:
    """Emit one of this project's alerting events about registered model ``model``."""
    from prefect.events import emit_event

    emit_event(event, resource={"prefect.resource.id": f"popularity.model.{model}"}, payload=payload)

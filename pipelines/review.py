"""A person's review of a promotion, and the record that tells a gated champion from one moved by hand.

With ``promotion.approval: required`` the gate's verdict is not the last word: a challenger that passed every
check is promoted only once a person approves it (:data:`Approver`; the flows ask in Prefect's UI, see
``flows/approval.py``), and a rejection or no answer within ``promotion.approval_timeout_s`` refuses it. The
decision and its reason are written on the version (tags ``approval``, ``approval_reason``).

The gate writes ``gate: passed`` on every version it promotes. A champion alias on a version without that
record was moved outside the gate, e.g. by the "Promote model" button of MLflow's own UI: :func:`gate_record`
says so, and the service and ``popularity model`` report it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

APPROVED, REJECTED, TIMED_OUT = "approved", "rejected", "timed_out"


@dataclass(frozen=True)
class Review:
    """What a person is asked to sign: the version, its model card, and how long the question stays open."""

    name: str
    version: str
    candidate: str | None
    card: str  # the version's model card (markdown), as its MLflow description shows it
    timeout_s: int


@dataclass(frozen=True)
class Decision:
    outcome: str  # approved, rejected or timed_out
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.outcome == APPROVED

    @property
    def message(self) -> str:
        said = f": {self.reason}" if self.reason else ""
        return {APPROVED: f"approved by a person{said}", REJECTED: f"rejected by a person{said}",
                TIMED_OUT: f"no approval within the timeout{said}"}.get(self.outcome, f"{self.outcome}{said}")


#: Asks a person about a challenger that passed the gate; returns their decision (blocking until then).
Approver = Callable[[Review], Decision]


def gate_record(version: str, tags: dict) -> dict:
    """Whether the champion ``version`` (with its registry ``tags``) holds the alias by the gate's decision:
    ``{"gate": <its record or None>, "promoted_without_gate": bool, "gate_warning": <why, or None>}``."""
    gate = tags.get("gate")
    if gate == "passed":
        return {"gate": gate, "promoted_without_gate": False, "gate_warning": None}
    fix = "run `popularity promote` on a challenger, or `popularity promote --rollback`"
    why = {None: "has no gate record", "failed": f"was refused by the gate ({(tags.get('gate_reason') or '')[:200]})",
           "pending": "still awaits a person's approval",
           "rolled_back": "was rolled back"}.get(gate, f"has the gate record {gate!r}")
    warning = (f"promoted without the gate: the champion alias points at v{version}, which {why}; it was moved "
               f"outside `popularity promote` (MLflow's own \"Promote model\" button?): {fix}")
    return {"gate": gate, "promoted_without_gate": True, "gate_warning": warning}

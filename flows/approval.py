"""A person's approval in the Prefect UI (``promotion.approval: required``): the promote flow run pauses with
an input form, its description the challenger's model card (version, metrics beside baseline and oracle,
every gate check with its threshold), and waits for "approve" (and a reason) up to
``promotion.approval_timeout_s``.

Prefect 3's blocking pause (``pause_flow_run(wait_for_input=...)``, not ``reschedule``): the process that
runs the flow waits, a local ``popularity promote`` as much as a deployment's run on a worker, and needs
no deployment. The UI shows the run as Paused with a "Resume" button that opens the form; a script resumes
it with ``prefect.flow_runs.resume_flow_run(flow_run_id, run_input={"approve": True, "reason": "..."})``.
A pause that times out is failed by Prefect ("paused and never resumed"); the version records
``approval: timed_out`` and the retraining that asked ends ``Refused``.
"""

from __future__ import annotations

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from pipelines import review


class Approval(RunInput):
    """The form a person fills in to sign a promotion."""

    approve: bool = Field(False, description="Promote this version to champion (leave unticked to refuse it).")
    reason: str = Field("", max_length=500, description="Why: shown on the model version beside the decision.")


def description(request: review.Review) -> str:
    """The form's text: what is asked, then the version's model card."""
    return (f"## Approve {request.name} v{request.version} (`{request.candidate}`) as champion?\n\n"
            f"It passed every check of the gate. Tick **approve** to promote it, leave it unticked to refuse it; "
            f"without an answer within {request.timeout_s} s it is refused.\n\n---\n\n{request.card}")


def poll_interval(timeout_s: int) -> int:
    """Seconds between the paused run's looks at whether it was resumed: 2 (an answer in the UI takes effect
    within two seconds, for one read of the API each time; Prefect's default is 10), or 1 for short timeouts."""
    return max(1, min(2, timeout_s // 10))


def ask_in_prefect(request: review.Review) -> review.Decision:
    """Pause the current flow run for a person's decision on ``request`` (blocking)."""
    print(f"{request.name} v{request.version} passed the gate: waiting up to {request.timeout_s} s for a person's "
          "approval (Prefect UI: this flow run, Resume)")
    form = Approval.with_initial_data(description=description(request), approve=False, reason="")
    try:
        answer = pause_flow_run(wait_for_input=form, timeout=request.timeout_s,
                                poll_interval=poll_interval(request.timeout_s), key=f"approve-v{request.version}")
    except FlowPauseTimeout:
        return review.Decision(review.TIMED_OUT, f"{request.timeout_s} s passed without an answer")
    decision = review.Decision(review.APPROVED if answer.approve else review.REJECTED, answer.reason.strip())
    print(f"v{request.version}: {decision.message}")
    return decision

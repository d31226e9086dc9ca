"""Who holds an MLflow run or a Prefect flow run open: the process is told apart from a later one that
reuses its pid, and a process on another host is never judged from here (issue 27)."""

from __future__ import annotations

import json
import subprocess
import sys

from pipelines import tracking


def test_a_live_owner_is_alive_and_an_ended_one_is_gone():
    assert tracking.owner_gone(tracking.owner()) is None
    ended = subprocess.run([sys.executable, "-c", "import json; from pipelines.tracking import owner; "
                            "print(json.dumps(owner()))"], capture_output=True, text=True, check=True)
    labels = json.loads(ended.stdout)
    reason = tracking.owner_gone(labels)
    assert reason and f"process {labels[tracking.OWNER_PID]}" in reason


def test_a_reused_pid_is_not_the_owner_and_another_hosts_owner_is_not_judged():
    mine = tracking.owner()
    earlier = {**mine, tracking.OWNER_STARTED: str(float(mine[tracking.OWNER_STARTED]) - 3600)}
    assert "another process" in tracking.owner_gone(earlier)
    assert tracking.owner_gone({**earlier, tracking.OWNER_HOST: "elsewhere"}) is None
    assert tracking.owner_gone({}) is None

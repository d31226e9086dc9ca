"""The retrain cooldown: one drift episode starts one retraining."""

from __future__ import annotations

import fcntl
import json
import time
from datetime import UTC, datetime
from pathlib import Path


class Cooldown:
    """One drift episode starts one retraining: a claim blocks further claims for ``hours``.

    Checking and claiming happen under one file lock, so overlapping monitor runs cannot both claim.
    """

    def __init__(self, path: Path, hours: float):
        self.path, self.hours = path, hours
        path.parent.mkdir(parents=True, exist_ok=True)

    def claim(self, reason: str) -> tuple[bool, str]:
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = time.time()
            if self.path.exists():
                last = json.loads(self.path.read_text())
                until = last["at"] + self.hours * 3600
                if now < until:
                    return False, (f"retraining already started at {_iso(last['at'])}; "
                                   f"cooldown until {_iso(until)}")
            self.path.write_text(json.dumps({"at": now, "reason": reason}))
            return True, f"retraining started at {_iso(now)}: {reason}"

    def release(self) -> None:
        """Give the claim back when retraining could not even be started."""
        self.path.unlink(missing_ok=True)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")

"""Validation's verdict on a snapshot, kept beside the snapshots under the home.

Snapshots are immutable, so what validation decided about one lives in its own small file: training
leaves out the rows it quarantined and refuses a snapshot that failed. No verdict means "never
validated", which the training flow answers by validating first.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


class FailedValidation(RuntimeError):
    """A snapshot, feature table or set of predictions failed its suite: the flow stops here."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    quarantined: frozenset[str]
    message: str
    docs_path: str | None = None

    def refusal(self, snapshot_id: str) -> str:
        docs = f"; Data Docs: {self.docs_path}/index.html" if self.docs_path else ""
        return f"snapshot {snapshot_id} failed validation, so nothing trains on it: {self.message}{docs}"


def _path(directory: Path, snapshot_id: str) -> Path:
    return directory / f"{snapshot_id}.json"


def save(verdict: Verdict, directory: Path, snapshot_id: str) -> Path:
    """Write-then-rename: a reader sees the old verdict or the new one, never half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    target = _path(directory, snapshot_id)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({**asdict(verdict), "quarantined": sorted(verdict.quarantined)}, indent=1))
    partial.replace(target)
    return target


def load(directory: Path, snapshot_id: str) -> Verdict | None:
    path = _path(directory, snapshot_id)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Verdict(raw["passed"], frozenset(raw["quarantined"]), raw["message"], raw.get("docs_path"))

"""Per-request log for drift monitoring: monitored features and the prediction, never the image.

JSON Lines under ``<home>/monitoring/requests``; each append holds an exclusive file lock, so
several service workers can write at once, and the file rotates at a size bound. A line torn by a
crash mid-write (or a full disk) is skipped and counted by the reader rather than failing the monitor.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import pandas as pd

LOOKUP_COLUMNS = ("ts", "prediction_id", "post_id")  # what joining feedback to its predictions needs
# A record's ids as json.dumps writes them (``"key": "value"``); a post id may hold escaped characters.
PREDICTION_ID = re.compile(rb'"prediction_id": "([0-9a-f]{32})"')
POST_ID = re.compile(rb'"post_id": "((?:[^"\\\n]|\\.)*)"')


class RequestLog:
    def __init__(self, directory: Path, max_bytes: int, backups: int):
        self.directory = directory
        self.skipped = 0  # lines of the last read that were not a whole JSON record
        self.path = directory / "requests.jsonl"
        self.max_bytes = max_bytes
        self.backups = backups
        directory.mkdir(parents=True, exist_ok=True)

    def _rotate(self) -> None:
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_suffix(f".jsonl.{i}")
            if older.exists():
                older.replace(self.path.with_suffix(f".jsonl.{i + 1}"))
        self.path.replace(self.path.with_suffix(".jsonl.1"))

    def append(self, records: list[dict]) -> None:
        payload = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if self.path.exists() and self.path.stat().st_size + len(payload) > self.max_bytes:
                    self._rotate()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    _write_all(fd, payload)
                finally:
                    os.close(fd)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self, last: int | None = None, version: str | None = None, since: float | None = None,
             profiled: bool = False, model: str | None = None) -> pd.DataFrame:
        """The newest ``last`` records across the current file and its rotated backups, of one model
        ``version``, newer than ``since`` and profiled for drift (with a ``profile_rate``) when asked; with
        ``model``, of that registered model (or naming none: written before models were named)."""
        files = [self.path.with_suffix(f".jsonl.{i}") for i in range(self.backups, 0, -1)] + [self.path]
        rows: list[dict] = []
        self.skipped = 0
        for f in files:
            if not f.exists():
                continue
            for line in f.read_bytes().splitlines():
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:  # torn JSON or bytes that are not UTF-8
                    row = None
                if isinstance(row, dict):
                    rows.append(row)
                else:
                    self.skipped += 1
        frame = pd.DataFrame(rows)
        if model is not None and "model" in frame:
            frame = frame[frame["model"].isna() | (frame["model"] == model)]
        if version is not None and "version" in frame:
            frame = frame[frame["version"].astype(str) == str(version)]
        if since is not None and "ts" in frame:
            frame = frame[frame["ts"] >= since]
        if profiled:
            frame = frame[frame["profile_rate"].notna()] if "profile_rate" in frame else frame.iloc[0:0]
        return (frame.tail(last) if last else frame).reset_index(drop=True)

    def lookup(self, prediction_ids: list[str], post_ids: list[str]) -> pd.DataFrame:
        """The records with one of these ids. The files are scanned for the ids as ``append`` wrote them
        (a regular expression, in C) and only the lines that name one are parsed: a ``/feedback`` call
        costs a scan of the log, not a JSON parse and a data frame of every record in it."""
        wanted = {PREDICTION_ID: {p.encode() for p in prediction_ids},
                  POST_ID: {json.dumps(str(p))[1:-1].encode() for p in post_ids}}  # escaped as json.dumps does
        files = [self.path.with_suffix(f".jsonl.{i}") for i in range(self.backups, 0, -1)] + [self.path]
        rows = []
        for f in files:
            if not f.exists():
                continue
            data = f.read_bytes()
            for field, ids in wanted.items():
                for match in field.finditer(data) if ids else ():
                    if match.group(1) not in ids:
                        continue
                    start, end = data.rfind(b"\n", 0, match.start()) + 1, data.find(b"\n", match.end())
                    try:
                        row = json.loads(data[start:end if end >= 0 else len(data)])
                    except ValueError:  # a torn line
                        continue
                    if isinstance(row, dict):
                        rows.append({c: row.get(c) for c in LOOKUP_COLUMNS})
        frame = pd.DataFrame(rows, columns=list(LOOKUP_COLUMNS)).drop_duplicates(ignore_index=True)
        return frame[frame["prediction_id"].isin(prediction_ids) | frame["post_id"].isin(post_ids)]


def _write_all(fd: int, payload: bytes) -> None:
    """``os.write`` may write less than asked (a signal, a nearly full disk): write the rest, so a record
    is never left torn by a short write."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]

"""Immutable, content-addressed dataset snapshots.

Layout: ``datasets/<name>/<snapshot-id>/{manifest.parquet, rejects.parquet, snapshot.json,
images/ab/ab12….jpg}``. A snapshot is assembled in a hidden temporary folder beside its final
place and renamed into place in one step, so a crash never leaves half a snapshot (the next writer
removes a killed one's temporary folder). The id is the digest of the manifest's content, so
collecting the same data twice, even at the same moment, gives the same snapshot.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import pandas as pd
from PIL import Image

from pipelines.data.images import decode
from pipelines.settings import ImageLimits

REJECT_COLUMNS = ["source_ref", "reason", "message"]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # one folder under datasets/: no separator, no ``..``


class SnapshotNameError(ValueError):
    """A data set name that is not one plain folder name under ``datasets/``."""


def check_name(name: str) -> str:
    """``name`` when it is a plain data set name (letters, digits, ``_ . -``, at most 64, not starting with
    a dot), so a snapshot is always written under the home's ``datasets/``; else :class:`SnapshotNameError`."""
    if not NAME.fullmatch(name) or ".." in name:
        raise SnapshotNameError(f"bad data set name {name!r}: use letters, digits, '_', '.' and '-' (at most 64, "
                                "starting with a letter or digit), no path")
    return name


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Rejects a method chooses (an outlier filter, one copy of a repeated image): left out on purpose, so not
#: data lost for validation's stop rule.
DELIBERATE_REJECTS = frozenset({"outlier", "duplicate", "conflicting_duplicate"})


@dataclass
class Snapshot:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.path.parent.name

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.path / "snapshot.json").read_text())

    @cached_property
    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "manifest.parquet")

    @cached_property
    def rejects(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / "rejects.parquet")

    @property
    def lost_rows(self) -> dict[str, int]:
        """The rejects that are data lost (bad values, missing images or targets, failed downloads), by
        reason; a method's deliberate filters (:data:`DELIBERATE_REJECTS`) are not."""
        reasons = self.meta["counts"].get("reject_reasons", {})
        return {reason: int(n) for reason, n in reasons.items() if reason not in DELIBERATE_REJECTS and n}

    def image_path(self, relative: str) -> Path:
        return self.path / relative

    def read_image(self, relative: str) -> bytes:
        return (self.path / relative).read_bytes()

    def decode_images(self, relatives, limits: ImageLimits) -> list[Image.Image]:
        """The stored images at ``relatives``, through the one safe decode path and its ``limits``."""
        return [decode(self.read_image(r), limits.max_bytes, limits.max_pixels, max_side=limits.model_side)[0]
                for r in relatives]

    def summary(self) -> dict:
        return {
            "snapshot": self.id,
            "path": str(self.path),
            "items": int(self.meta["counts"]["items"]),
            "rejects": int(self.meta["counts"]["rejects"]),
            "labels": self.meta["counts"].get("labels", {}),
            "reject_reasons": self.meta["counts"].get("reject_reasons", {}),
        }

    @classmethod
    def open(cls, datasets_dir: Path, ref: str | None = None) -> Snapshot:
        """A snapshot by path, by id (searched across names), by name (its latest) or the latest of all."""
        if ref and Path(ref).is_dir() and (Path(ref) / "snapshot.json").exists():
            return cls(Path(ref))
        candidates = sorted((p for p in datasets_dir.glob("*/*/snapshot.json") if not p.parent.name.startswith(".")),
                            key=lambda p: p.stat().st_mtime)
        if ref:
            candidates = [p for p in candidates if p.parent.name.startswith(ref) or p.parent.parent.name == ref]
        if not candidates:
            raise FileNotFoundError(f"no snapshot {f'{ref} ' if ref else ''}under {datasets_dir}; run `popularity collect` first")
        return cls(candidates[-1].parent)


def image_path(data: bytes, fmt: str) -> tuple[str, str]:
    """``(image_id, relative_path)`` of image bytes stored by content hash under ``images/``."""
    image_id = content_id(data)
    ext = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}[fmt]
    return image_id, f"images/{image_id[:2]}/{image_id}.{ext}"


@dataclass
class SnapshotWriter:
    """Collects images and rows in a temporary folder, then commits them as one snapshot."""

    datasets_dir: Path
    name: str
    stale_after_s: float
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parent = self.datasets_dir / check_name(self.name)
        self.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(self.parent, self.stale_after_s)
        self.tmp = self.parent / f".tmp-{uuid.uuid4().hex}"
        (self.tmp / "images").mkdir(parents=True)
        (self.tmp / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))

    def add_image(self, data: bytes, fmt: str) -> tuple[str, str]:
        """Store the bytes by content hash; returns ``(image_id, relative_path)``."""
        image_id, relative = image_path(data, fmt)
        target = self.tmp / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return image_id, relative

    def reject(self, source_ref: str, reason: str, message: str) -> None:
        self.rejects.append({"source_ref": source_ref, "reason": reason, "message": message})

    def write_extra(self, filename: str, frame: pd.DataFrame) -> None:
        """A side table that training never reads (e.g. the demo oracle)."""
        frame.to_parquet(self.tmp / filename, index=False)

    def commit(self, manifest: pd.DataFrame, meta: dict) -> Snapshot:
        manifest = manifest.sort_values("image_id").reset_index(drop=True)
        rejects = pd.DataFrame(self.rejects, columns=REJECT_COLUMNS)
        digest = hashlib.sha256()
        digest.update(pd.util.hash_pandas_object(manifest.astype(str), index=False).values.tobytes())
        digest.update(json.dumps(meta.get("source"), sort_keys=True).encode())
        snapshot_id = digest.hexdigest()[:16]
        manifest.to_parquet(self.tmp / "manifest.parquet", index=False)
        rejects.to_parquet(self.tmp / "rejects.parquet", index=False)
        labels = manifest["label"].value_counts().sort_index() if "label" in manifest else pd.Series(dtype=int)
        meta = {
            **meta,
            "id": snapshot_id,
            "name": self.name,
            "created_at": datetime.now(UTC).isoformat(),
            "code_version": code_version(),
            "counts": {
                "items": len(manifest),
                "rejects": len(rejects),
                "labels": {str(k): int(v) for k, v in labels.items()},
                "splits": {str(k): int(v) for k, v in manifest["split"].value_counts().items()},
                "reject_reasons": {str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
            },
        }
        (self.tmp / "snapshot.json").write_text(json.dumps(meta, indent=2, default=str))
        (self.tmp / OWNER).unlink()
        final = self.parent / snapshot_id
        try:
            self.tmp.rename(final)
        except OSError as exc:
            # The same content collected before, or by another writer just now: keep the snapshot there.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not (final / "snapshot.json").exists():
                raise
            self.abort()
        return Snapshot(final)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


OWNER = ".owner"  # host and pid of the writer of a temporary folder


def _owner_alive(tmp: Path) -> bool | None:
    """Whether the process that writes ``tmp`` still runs; None when that cannot be known (no owner
    recorded yet, or one on another host)."""
    try:
        owner = json.loads((tmp / OWNER).read_text())
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if owner.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, under another user
        pass
    return True


def remove_stale_tmp(parent: Path, stale_after_s: float) -> None:
    """Remove the temporary folders of killed writers: at once when their owner has ended, after
    ``stale_after_s`` when the owner cannot be checked; a running writer's folder is never touched."""
    for tmp in parent.glob(".tmp-*"):
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:  # another writer removed it first
            continue
        alive = _owner_alive(tmp)
        if tmp.is_dir() and (alive is False or (alive is None and age > stale_after_s)):
            shutil.rmtree(tmp, ignore_errors=True)

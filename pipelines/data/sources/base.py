"""What every source shares: the item and reject a source yields, the spec error, and the safe read of a
local image file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipelines.data.images import ImageInfo

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


class SpecError(ValueError):
    """A ``--source`` spec that names no known source, or a source with nothing usable."""


@dataclass
class Item:
    """One image with its engagement and social fields; ``data``, ``path`` or ``url`` gives the bytes.

    ``path`` is a downloaded body in the cache, read when needed so that a batch does not hold its
    bodies in memory. ``info`` is set once the bytes have been decoded, so a batch checked on a worker
    is not decoded twice.
    """

    ref: str
    fields: dict = field(default_factory=dict)
    data: bytes | None = None
    url: str | None = None
    oracle: dict | None = None
    info: ImageInfo | None = None
    path: Path | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        return self.path.read_bytes() if self.path is not None else b""


@dataclass
class Reject:
    ref: str
    reason: str
    message: str


class Source(Protocol):
    kind: str
    default_label: str

    def items(self) -> Iterator[Item | Reject]: ...

    def describe(self) -> dict: ...


@dataclass
class Combined:
    """Several sources collected as one, in order; the first names the kind and the default label
    (retraining: fresh data plus the feedback rows that came back with their images)."""

    sources: list

    @property
    def kind(self) -> str:
        return self.sources[0].kind

    @property
    def default_label(self) -> str:
        return self.sources[0].default_label

    def items(self) -> Iterator[Item | Reject]:
        for source in self.sources:
            yield from source.items()

    def describe(self) -> dict:
        return {"kind": "combined", "sources": [source.describe() for source in self.sources]}


def read_file(path: Path, fields: dict, max_bytes: int, within: Path | None = None) -> Item | Reject:
    """A local image as an item; reads at most one byte past the cap so a huge file costs nothing.

    ``within`` confines the path (after ``..`` and symlinks) to a folder: a manifest names files
    relative to itself, and a row must not read the rest of the machine. That is checked before
    existence, so a reject says nothing about what lies outside. Only regular files are read, opened
    non-blocking, so a FIFO or a device (``/dev/zero``) is a reject at once rather than a hang.
    """
    ref = str(path)
    if within is not None and not path.resolve().is_relative_to(within.resolve()):
        return Reject(ref, "outside_manifest_folder", f"{ref} is outside the manifest's folder {within}")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return Reject(ref, "not_a_regular_file", f"{ref} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the stat
                return Reject(ref, "not_a_regular_file", f"{ref} is not a regular file")
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return Reject(ref, "missing_file", f"{ref} does not exist")
    except OSError as exc:
        return Reject(ref, "unreadable_file", f"{ref} cannot be read: {exc}")
    return Item(ref=ref, fields=fields, data=data)


def existing_path(location: str, kind: str, want_dir: bool) -> Path:
    if not location:
        raise SpecError(f"{kind} needs a location: {kind}:{'DIR' if want_dir else 'FILE'}")
    path = Path(location).expanduser()
    if want_dir and not path.is_dir():
        raise SpecError(f"{kind}:{location}: {path} is not a folder")
    if not want_dir and not path.is_file():
        raise SpecError(f"{kind}:{location}: {path} is not a file")
    return path

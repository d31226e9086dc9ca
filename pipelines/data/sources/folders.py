"""``folders:DIR``: seed 000's training layout, ``DIR/popular/*`` and ``DIR/unpopular/*`` → label 1/0."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.sources.base import Item, Reject, SpecError, existing_path, read_file
from pipelines.settings import Settings

CLASSES = {"popular": 1, "unpopular": 0}


@dataclass
class FoldersSource:
    root: Path
    max_bytes: int

    kind = "folders"
    default_label = "given"

    @classmethod
    def from_location(cls, location: str, settings: Settings) -> FoldersSource:
        root = existing_path(location, cls.kind, want_dir=True)
        missing = [name for name in CLASSES if not (root / name).is_dir()]
        if missing:
            raise SpecError(f"folders:{location} needs the subfolders popular/ and unpopular/; missing {missing}")
        source = cls(root=root, max_bytes=settings.images.max_bytes)
        if not any(True for _ in source._files()):
            raise SpecError(f"folders:{location}: popular/ and unpopular/ hold no files")
        return source

    def describe(self) -> dict:
        return {"kind": self.kind, "root": str(self.root.resolve())}

    def _files(self) -> Iterator[tuple[Path, int]]:
        # Hidden files (.DS_Store, editor swap files) are the file system's, not the data set's.
        for name, label in CLASSES.items():
            for path in sorted((self.root / name).rglob("*")):
                if path.is_file() and not any(part.startswith(".") for part in path.relative_to(self.root).parts):
                    yield path, label

    def items(self) -> Iterator[Item | Reject]:
        for path, label in self._files():
            yield read_file(path, {"label": label, "class_folder": path.relative_to(self.root).parts[0]},
                            self.max_bytes)

"""``likes-file:DIR``: seed 004's layout, numbered images ``1.jpg … n.jpg`` plus ``n: likes`` lines.

Both are searched inside DIR, so the seed's ``Data/`` folder with ``Images (jpg)/`` and
``y_likes_data.txt`` works as it is: the image folder is the one with the most numbered images, the
likes file the text file with the most ``n: likes`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.data.sources.base import IMAGE_SUFFIXES, Item, Reject, SpecError, existing_path, read_file
from pipelines.settings import Settings

LINE = re.compile(r"^\s*(?P<n>[^:#]+?)\s*:\s*(?P<likes>[^#]*?)\s*(#.*)?$")
MAX_LIKES_FILE_BYTES = 50 * 1024 * 1024


def _number(text: str) -> int | None:
    """An integer written as ``27`` or ``27.0`` (numpy.savetxt writes the latter)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _parse_line(line: str) -> tuple[int, int] | str | None:
    """``(n, likes)``, ``None`` for a blank or comment line, or the reason the line is bad."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    match = LINE.match(line)
    if not match:
        return "malformed_line"
    n, likes = _number(match["n"]), _number(match["likes"])
    if n is None or likes is None:
        return "malformed_line"
    if likes < 0 or n < 0:
        return "negative_count"
    return n, likes


def _score_likes_file(path: Path) -> int:
    try:
        if path.stat().st_size > MAX_LIKES_FILE_BYTES:
            return 0
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    return sum(isinstance(_parse_line(line), tuple) for line in lines)


@dataclass
class LikesFileSource:
    root: Path
    images_dir: Path
    likes_file: Path
    max_bytes: int

    kind = "likes-file"
    default_label = "likes"

    @classmethod
    def from_location(cls, location: str, settings: Settings) -> LikesFileSource:
        root = existing_path(location, cls.kind, want_dir=True)
        files = [p for p in sorted(root.rglob("*")) if p.is_file()]
        numbered: dict[Path, int] = {}
        for path in files:
            if path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
                numbered[path.parent] = numbered.get(path.parent, 0) + 1
        texts = {p: _score_likes_file(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES}
        texts = {p: score for p, score in texts.items() if score}
        if not numbered:
            raise SpecError(f"likes-file:{location}: no numbered images (1.jpg … n.jpg) inside {root}")
        if not texts:
            raise SpecError(f"likes-file:{location}: no likes file with 'n: likes' lines inside {root}")
        return cls(root=root, images_dir=max(numbered, key=lambda p: (numbered[p], str(p))),
                   likes_file=max(texts, key=lambda p: (texts[p], str(p))), max_bytes=settings.images.max_bytes)

    def describe(self) -> dict:
        return {"kind": self.kind, "root": str(self.root.resolve()), "images": str(self.images_dir.resolve()),
                "likes_file": str(self.likes_file.resolve())}

    def _likes(self) -> Iterator[tuple[int, int] | Reject]:
        seen: set[int] = set()
        for lineno, line in enumerate(self.likes_file.read_text(errors="replace").splitlines(), start=1):
            parsed = _parse_line(line)
            ref = f"{self.likes_file}:{lineno}"
            if parsed is None:
                continue
            if isinstance(parsed, str):
                yield Reject(ref, parsed, f"expected 'n: likes' with non-negative integers, got {line.strip()!r}")
            elif parsed[0] in seen:
                yield Reject(ref, "duplicate_id", f"image {parsed[0]} already has a likes line")
            else:
                seen.add(parsed[0])
                yield parsed

    def items(self) -> Iterator[Item | Reject]:
        images: dict[int, Path] = {}
        for path in sorted(self.images_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem.isdigit():
                n = int(path.stem)
                if n in images:
                    yield Reject(str(path), "duplicate_id", f"image {n} is already {images[n].name}")
                else:
                    images[n] = path
        labelled: set[int] = set()
        for entry in self._likes():
            if isinstance(entry, Reject):
                yield entry
                continue
            n, likes = entry
            labelled.add(n)
            if n not in images:
                yield Reject(f"{self.images_dir / f'{n}.jpg'}", "missing_file",
                             f"the likes file names image {n}, which is not in {self.images_dir}")
                continue
            yield read_file(images[n], {"post_number": n, "likes": likes}, self.max_bytes)
        for n in sorted(set(images) - labelled):
            yield Reject(str(images[n]), "unlabelled", f"image {n} has no line in {self.likes_file.name}")

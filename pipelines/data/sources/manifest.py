"""``manifest:FILE``: a CSV, Parquet or JSON Lines table with one image per row (seeds 001-003).

The image column (``image``, ``image_path``, ``path``, ``file``, ``url`` or ``image_url``) holds a
path relative to the file or an http(s) URL (a path must stay inside the file's folder unless
``sources.allow_outside_paths`` is set); every other column is kept (likes, views, favorites,
comments, followers, posted_at, user_id, views_d1..views_d30, …). Text columns (``tags``, ``title``,
``description``: a string separated by ``|``, spaces or commas, or a list in JSON Lines/Parquet) stay text,
features of the models that read social inputs; a missing social value is kept as missing. Rows that cannot
be used — a malformed line, a negative or non-numeric count, a repeated id, an empty image cell — are rejects.

Seed 002's layout has a 30-day views sequence and no ``views``: the last day (the highest ``views_dN``)
is the total, and a row without it is a reject. Its user columns (contacts, groups, mean views, photo
count) become the social columns of :mod:`pipelines.features.social` under their aliases.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipelines.data.labels import COUNT_COLUMN
from pipelines.data.sources.base import Item, Reject, SpecError, existing_path, read_file
from pipelines.data.text import TEXT_COLUMNS, as_text
from pipelines.settings import Settings

IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "url", "image_url")
ID_COLUMNS = ("id", "photo_id", "post_id", "item_id", "pid")
GROUP_COLUMNS = ("group", "user_id", "uid", "owner", "user", "username", "category")
MEASURE_COLUMNS = ("account_age_days", "posts_per_week")  # the other numeric social columns
DAY_COLUMN = re.compile(r"^views_d(\d+)$")
# Other names (in any case) for the social columns that pipelines.features.social reads, e.g. the ICIP 2020
# challenge's Contacts, GroupsCount, MeanViews and PhotoCount (seed 002).
ALIASES = {
    "contacts": "user_contacts", "groupscount": "user_groups", "groups_count": "user_groups",
    "meanviews": "user_mean_views", "mean_views": "user_mean_views", "photocount": "photo_count",
    "user_photo_count": "photo_count", "tagcount": "tag_count", "num_tags": "tag_count", "n_tags": "tag_count",
    "caption": "description", "alltags": "tags", "tag": "tags",
}
# Column names the collector writes itself; a source's own column of that name is kept with a prefix.
RESERVED = {"image_id", "image_path", "source", "source_ref", "width", "height", "format", "mode", "n_bytes",
            "split"}


def _read_csv(path: Path) -> Iterator[dict | Reject]:
    with path.open(newline="", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            return
        header = [h.strip() for h in header]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Reject(f"{path}:{reader.line_num}", "malformed_line", f"unreadable CSV line: {exc}")
                continue
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield Reject(f"{path}:{reader.line_num}", "malformed_line",
                             f"{len(row)} fields where the header has {len(header)}")
                continue
            yield {k: (v.strip() if v.strip() else None) for k, v in zip(header, row)}


def _read_jsonl(path: Path) -> Iterator[dict | Reject]:
    if path.read_text(errors="replace").lstrip().startswith("["):  # a plain JSON array of objects
        yield from _read_json_array(path)
        return
    with path.open(errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Reject(f"{path}:{lineno}", "malformed_line", f"not valid JSON: {exc}")
                continue
            if not isinstance(row, dict):
                yield Reject(f"{path}:{lineno}", "malformed_line", "a JSON Lines row must be an object")
                continue
            yield row


def _read_json_array(path: Path) -> Iterator[dict | Reject]:
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"manifest:{path} is not valid JSON: {exc}") from exc
    for index, row in enumerate(rows):
        yield row if isinstance(row, dict) else Reject(f"{path}#row{index}", "malformed_line", "not a JSON object")


def _read_parquet(path: Path) -> Iterator[dict | Reject]:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise SpecError(f"manifest:{path} is not a readable Parquet file: {exc}") from exc
    yield from frame.to_dict("records")


READERS = {".csv": _read_csv, ".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_jsonl,
           ".parquet": _read_parquet, ".pq": _read_parquet}


def _missing(value) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _clean(row: dict) -> dict | str:
    """Counts and social measures as non-negative numbers, ``posted_at`` as a timestamp, the text columns
    (tags, title, description) as text; or the reason the row is bad."""
    out = {}
    for key, value in row.items():
        key = str(key)
        if isinstance(value, list | tuple) or (not _missing(value) and key in TEXT_COLUMNS):
            out[key] = as_text(value)
            continue
        if _missing(value):
            out[key] = None
            continue
        if COUNT_COLUMN.match(key) or key in MEASURE_COLUMNS:
            number = pd.to_numeric(value, errors="coerce")
            if pd.isna(number):
                return f"bad_value: {key}={value!r} is not a number"
            if number < 0:
                return f"negative_count: {key}={value!r}"
            value = float(number)
        elif key == "posted_at":
            stamp = pd.to_datetime(value, utc=True, errors="coerce", unit="s" if isinstance(value, int | float)
                                   else None)
            if pd.isna(stamp):
                return f"bad_value: posted_at={value!r} is not a date"
            value = stamp
        out[f"source_{key}" if key in RESERVED else key] = value
    return out


@dataclass
class ManifestSource:
    path: Path
    image_column: str
    default_label: str
    max_bytes: int
    entries: list[Item | Reject] = field(repr=False)
    allow_outside_paths: bool = False

    kind = "manifest"

    @classmethod
    def from_location(cls, location: str, settings: Settings) -> ManifestSource:
        path = existing_path(location, cls.kind, want_dir=False)
        reader = READERS.get(path.suffix.lower())
        if reader is None:
            raise SpecError(f"manifest:{location}: expected a .csv, .parquet or .jsonl file")
        rows = list(reader(path))
        columns = {str(k) for row in rows if isinstance(row, dict) for k in row}
        renames = _renames(columns) | _counted_tags(rows, columns)
        if renames:
            rows = [{renames.get(str(k), k): v for k, v in row.items()} if isinstance(row, dict) else row
                    for row in rows]
            columns = {renames.get(c, c) for c in columns}
        total = _views_total(columns)
        image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
        if image_column is None:
            raise SpecError(f"manifest:{location} has no image column; name one of {list(IMAGE_COLUMNS)}")
        entries = list(_entries(rows, path, image_column, total))
        if not any(isinstance(e, Item) for e in entries):
            reasons = sorted({e.reason for e in entries if isinstance(e, Reject)})
            raise SpecError(f"manifest:{location}: no usable row (rejects: {reasons})")
        known = columns | {"views"} if total else columns
        return cls(path=path, image_column=image_column, default_label=_default_label(known),
                   max_bytes=settings.images.max_bytes, entries=entries,
                   allow_outside_paths=settings.sources.allow_outside_paths)

    def describe(self) -> dict:
        return {"kind": self.kind, "file": str(self.path.resolve()), "image_column": self.image_column}

    def items(self) -> Iterator[Item | Reject]:
        for entry in self.entries:
            # Local files are read lazily so that a large manifest does not sit in memory as bytes.
            if isinstance(entry, Item) and entry.url is None and entry.data is None:
                within = None if self.allow_outside_paths else self.path.parent
                yield read_file(Path(entry.ref), entry.fields, self.max_bytes, within=within)
            else:
                yield entry


def _default_label(columns: set[str]) -> str:
    if "label" in columns:
        return "given"
    if {"likes", "followers"} <= columns:
        return "median-split"
    if {"views", "posted_at"} <= columns:
        return "score"
    if "favorites" in columns:
        return "favorited"
    if "views" in columns and "likes" not in columns:
        return "deciles"
    return "likes"


def _renames(columns: set[str]) -> dict[str, str]:
    """Alias → our name, for each social column the manifest has only under an alias (the first alias wins)."""
    renames, taken = {}, set(columns)
    for column in sorted(columns):
        ours = ALIASES.get(column.lower())
        if ours and ours not in taken:
            renames[column] = ours
            taken.add(ours)
    return renames


def _counted_tags(rows: list[dict | Reject], columns: set[str]) -> dict[str, str]:
    """``tags`` → ``tag_count`` when every value of the column is a number (a count, as older manifests
    have it); a column with any word in it is text, so a post tagged ``2019`` keeps its tag."""
    if "tags" not in columns or "tag_count" in columns:
        return {}
    values = [row["tags"] for row in rows if isinstance(row, dict) and not _missing(row.get("tags"))]
    numeric = values and all(not isinstance(v, list | tuple | bool) and not pd.isna(pd.to_numeric(v, errors="coerce"))
                             for v in values)
    return {"tags": "tag_count"} if numeric else {}


def _views_total(columns: set[str]) -> str | None:
    """The daily column that stands for ``views`` in a manifest without one: the sequence's last day."""
    days = [int(match[1]) for column in columns if (match := DAY_COLUMN.match(column))]
    return f"views_d{max(days)}" if days and "views" not in columns else None


def _entries(rows: list[dict | Reject], path: Path, image_column: str, total: str | None = None
             ) -> Iterator[Item | Reject]:
    """Items and rejects of the rows; ``total`` names the daily column to copy into ``views``."""
    id_column = next((c for c in ID_COLUMNS if any(isinstance(r, dict) and c in r for r in rows)), None)
    group_column = next((c for c in GROUP_COLUMNS if any(isinstance(r, dict) and c in r for r in rows)), None)
    seen: set[str] = set()
    for index, row in enumerate(rows):
        if isinstance(row, Reject):
            yield row
            continue
        image = row.get(image_column)
        ref = f"{path}#row{index}"
        if _missing(image) or not str(image).strip():
            yield Reject(ref, "missing_image", f"the {image_column} cell is empty")
            continue
        image = str(image).strip()
        cleaned = _clean({k: v for k, v in row.items() if k != image_column})
        if isinstance(cleaned, str):
            reason, _, message = cleaned.partition(": ")
            yield Reject(image, reason, message)
            continue
        if total:
            if cleaned.get(total) is None:
                yield Reject(image, "missing_sequence",
                             f"{total} is empty: without the last day of its views sequence the row has no views")
                continue
            cleaned["views"] = cleaned[total]
            cleaned["views_days"] = float(total.removeprefix("views_d"))  # counted over that many days
        if id_column and not _missing(row.get(id_column)):
            key = str(row[id_column])
            if key in seen:
                yield Reject(image, "duplicate_id", f"{id_column}={key} already appeared in an earlier row")
                continue
            seen.add(key)
        if group_column and group_column != "group" and not _missing(cleaned.get(group_column)):
            cleaned["group"] = str(cleaned[group_column])
        if "://" in image:
            yield Item(ref=image, url=image, fields=cleaned)
        else:
            local = Path(image) if Path(image).is_absolute() else path.parent / image
            yield Item(ref=str(local), fields=cleaned)

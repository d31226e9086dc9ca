"""``grubhub:FILE.json``: seed 000's restaurant-menu export; popular vs. other photographed dishes.

Within each menu category, photographed items with a boolean ``popular`` flag are compared; only
categories with at least one popular and one non-popular photo contribute (the comparison is only
fair inside one menu section), and a URL listed as both is dropped from both, as the seed does.
The images are downloaded by the collector; the category is the grouping key of the split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.data.sources.base import Item, Reject, SpecError, existing_path
from pipelines.settings import Settings

IMAGE_KEYS = ("base_url", "public_id", "format")


def _image_url(menu_item: dict) -> str | None:
    media = menu_item.get("media_image")
    if not isinstance(media, dict) or not all(isinstance(media.get(k), str) and media.get(k) for k in IMAGE_KEYS):
        return None
    return f"{media['base_url']}{media['public_id']}.{media['format']}"


@dataclass
class GrubhubSource:
    path: Path
    entries: list[Item | Reject] = field(repr=False)

    kind = "grubhub"
    default_label = "given"

    @classmethod
    def from_location(cls, location: str, settings: Settings) -> GrubhubSource:
        path = existing_path(location, cls.kind, want_dir=False)
        try:
            export = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpecError(f"grubhub:{location} is not valid JSON: {exc}") from exc
        if not isinstance(export, dict) or not isinstance(export.get("items"), list):
            raise SpecError(f"grubhub:{location} has no top-level 'items' list (a Stevesie GrubHub export)")
        entries = list(_entries(export["items"], str(path)))
        if not any(isinstance(e, Item) for e in entries):
            raise SpecError(f"grubhub:{location}: no menu category has both a popular and a non-popular photo")
        return cls(path=path, entries=entries)

    def describe(self) -> dict:
        return {"kind": self.kind, "file": str(self.path.resolve())}

    def items(self) -> Iterator[Item | Reject]:
        yield from self.entries


def _entries(restaurants: list, file: str) -> Iterator[Item | Reject]:
    categories: list[tuple[str, str, dict[str, list[dict]]]] = []
    for r_index, entry in enumerate(restaurants):
        restaurant = entry.get("object", {}).get("restaurant") if isinstance(entry, dict) else None
        if not isinstance(restaurant, dict):
            yield Reject(f"{file}#items[{r_index}]", "malformed_entry", "no object.restaurant in this entry")
            continue
        r_name = str(restaurant.get("name") or restaurant.get("id") or f"restaurant-{r_index}")
        r_key = str(restaurant.get("id") or r_name)
        for c_index, category in enumerate(restaurant.get("menu_category_list") or []):
            c_name = str(category.get("name") or f"category-{c_index}") if isinstance(category, dict) else ""
            ref = f"{file}#items[{r_index}]/{c_name}"
            if not isinstance(category, dict) or not isinstance(category.get("menu_item_list", []), list):
                yield Reject(ref, "malformed_entry", "a menu category without a menu_item_list")
                continue
            sides: dict[str, list[dict]] = {"popular": [], "other": []}
            for menu_item in category.get("menu_item_list", []):
                if not isinstance(menu_item, dict) or "media_image" not in menu_item:
                    continue  # dishes without a photo are simply not part of the data set
                url = _image_url(menu_item)
                if url is None or not isinstance(menu_item.get("popular"), bool):
                    yield Reject(f"{ref}/{menu_item.get('name', '?')}", "malformed_entry",
                                 "media_image needs base_url, public_id and format, and popular must be a boolean")
                    continue
                sides["popular" if menu_item["popular"] else "other"].append(
                    {"url": url, "dish": str(menu_item.get("name", "")), "restaurant": r_name,
                     "category": c_name, "group": f"{r_key}/{c_name}"})
            categories.append((ref, c_name, sides))
    popular_urls = {d["url"] for _, _, sides in categories for d in sides["popular"]}
    other_urls = {d["url"] for _, _, sides in categories for d in sides["other"]}
    both = popular_urls & other_urls
    seen: set[str] = set()
    for ref, _, sides in categories:
        if not sides["popular"] or not sides["other"]:
            for dish in sides["popular"] + sides["other"]:
                yield Reject(dish["url"], "one_sided_category",
                             "its menu category lacks a popular or a non-popular photo to compare with")
            continue
        for label, dishes in ((1, sides["popular"]), (0, sides["other"])):
            for dish in dishes:
                url = dish.pop("url")
                if url in both:
                    yield Reject(url, "conflicting_duplicate", "the same photo is listed as popular and not")
                elif url in seen:
                    yield Reject(url, "duplicate", "the same photo URL was already listed")
                else:
                    seen.add(url)
                    yield Item(ref=url, url=url, fields={**dish, "label": label})

"""Data sources: each turns a ``KIND:LOCATION`` spec into a stream of items for the collector.

A source validates its location when it is built (so a bad ``--source`` fails before anything is
written) and yields an :class:`Item` per usable entry or a :class:`Reject` saying why an entry is not.
"""

from __future__ import annotations

from pipelines.data.sources.base import (IMAGE_SUFFIXES, Combined, Item, Reject, Source, SpecError, existing_path,
                                         read_file)
from pipelines.settings import Settings

__all__ = ["IMAGE_SUFFIXES", "Combined", "Item", "Reject", "Source", "SpecError", "existing_path", "parse_spec",
           "read_file"]


def parse_spec(spec: str, settings: Settings) -> Source:
    """The source named by ``spec``: ``demo[:N]``, ``folders:DIR``, ``likes-file:DIR``,
    ``grubhub:FILE.json`` or ``manifest:FILE``; ``settings`` give its limits (and the demo's size)."""
    from pipelines.data.sources.demo import DemoSource
    from pipelines.data.sources.folders import FoldersSource
    from pipelines.data.sources.grubhub import GrubhubSource
    from pipelines.data.sources.likes_file import LikesFileSource
    from pipelines.data.sources.manifest import ManifestSource

    factories = {
        "demo": DemoSource.from_location,
        "folders": FoldersSource.from_location,
        "likes-file": LikesFileSource.from_location,
        "grubhub": GrubhubSource.from_location,
        "manifest": ManifestSource.from_location,
    }
    kind, _, location = spec.strip().partition(":")
    if kind not in factories:
        raise SpecError(f"unknown source kind {kind!r} in {spec!r}; expected KIND:LOCATION with KIND one of "
                        f"{sorted(factories)}")
    return factories[kind](location, settings)

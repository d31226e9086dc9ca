"""Images to probe a freshly deployed service with: held out from training and from the drift
reference, then the same images shifted, so one demo shows the monitor saying both "no drift" and
"drift". A probe made of the reference itself would pass whatever the monitor did."""

from __future__ import annotations

from dataclasses import replace

from PIL import ImageEnhance

from pipelines.data.images import decode, to_jpeg
from pipelines.data.snapshots import Snapshot
from pipelines.data.sources import parse_spec
from pipelines.data.sources.demo import DemoSource
from pipelines.settings import ImageLimits, Settings


def held_out(source: str, snapshot: Snapshot, n: int, settings: Settings) -> list[bytes]:
    """A fresh draw of the demo generator (another seed: new scenes, new users), or for other sources the
    snapshot's validation split, which neither trained the champion nor is its drift reference."""
    spec = parse_spec(source, settings)
    if isinstance(spec, DemoSource):
        return [item.data for item in replace(spec, n=n, seed=spec.seed + 1).items()]
    rows = snapshot.manifest[snapshot.manifest["split"] == "val"]
    return [snapshot.read_image(path) for path in rows["image_path"].head(n)]


def darkened(images: list[bytes], factor: float, limits: ImageLimits) -> list[bytes]:
    """The same images under worse light: a covariate shift the monitor must flag."""
    return [to_jpeg(ImageEnhance.Brightness(decode(data, limits.max_bytes, limits.max_pixels)[0]).enhance(factor))
            for data in images]
